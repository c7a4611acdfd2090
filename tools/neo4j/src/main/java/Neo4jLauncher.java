// Starts a real Neo4j 5.26 (embedded DBMS) with the Bolt connector on loopback, prints one
// ready line once Bolt accepts connections, and shuts down cleanly on SIGTERM/SIGINT.
// Usage: java -cp <neo4j classpath> Neo4jLauncher <data dir> <port> [password]
// With no password, authentication is off (the default for tests on loopback). The page
// cache is -Dneo4j.pagecache=SIZE (k/m/g suffix; default 512m).

import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;

public final class Neo4jLauncher {
    public static void main(String[] args) throws Exception {
        Path home = Path.of(args.length > 0 ? args[0] : "neo4j-data").toAbsolutePath();
        int port = args.length > 1 ? Integer.parseInt(args[1]) : 7687;
        String password = args.length > 2 ? args[2] : "";
        long started = System.nanoTime();

        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .setConfig(HttpConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, !password.isEmpty())
                // Small box: keep the page cache and transaction memory modest (a store
                // larger than its page cache reads through the OS on every miss: give the
                // benchmarks' large scale more).
                .setConfig(GraphDatabaseSettings.pagecache_memory,
                           bytes(System.getProperty("neo4j.pagecache", "512m")))
                .setConfig(GraphDatabaseSettings.memory_transaction_global_max_size, ByteUnit.mebiBytes(1024))
                .build();

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("neo4j: shutting down");
            dbms.shutdown();
            stopped.countDown();
        }));

        if (!password.isEmpty()) {
            dbms.database("system").executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD $pw CHANGE NOT REQUIRED",
                    java.util.Map.of("pw", password));
        }
        waitForBolt(port);
        double seconds = (System.nanoTime() - started) / 1e9;
        System.out.printf("neo4j: ready bolt://127.0.0.1:%d (%.1fs, data in %s)%n", port, seconds, home);
        System.out.flush();
        stopped.await();
    }

    private static long bytes(String size) {
        String text = size.trim().toLowerCase();
        long unit = switch (text.charAt(text.length() - 1)) {
            case 'k' -> ByteUnit.kibiBytes(1);
            case 'm' -> ByteUnit.mebiBytes(1);
            case 'g' -> ByteUnit.gibiBytes(1);
            default -> 1;
        };
        String digits = unit == 1 ? text : text.substring(0, text.length() - 1);
        return Long.parseLong(digits) * unit;
    }

    private static void waitForBolt(int port) throws InterruptedException {
        for (int i = 0; i < 600; i++) {
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress("127.0.0.1", port), 200);
                return;
            } catch (java.io.IOException e) {
                Thread.sleep(100);
            }
        }
        throw new IllegalStateException("Bolt did not open on port " + port);
    }
}
