// The broker's request counts, read over JMX from a running Kafka JVM found by its pid:
// attaches with the JDK's Attach API (same user, no JMX port or flag on the broker), starts
// its local management agent, and prints one JSON line per line read on stdin:
// {"Produce": 123, "Fetch": 456, ...}, the cumulative Count of every
// kafka.network:type=RequestMetrics,name=RequestsPerSec meter summed over versions.
// Used by bench/broker_requests.py; run as `java bench/java/BrokerRequests.java PID`.
import com.sun.tools.attach.VirtualMachine;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.Map;
import java.util.TreeMap;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

public class BrokerRequests {
    public static void main(String[] args) throws Exception {
        VirtualMachine vm = VirtualMachine.attach(args[0]);
        String address = vm.startLocalManagementAgent();
        vm.detach();
        try (JMXConnector connector = JMXConnectorFactory.connect(new JMXServiceURL(address))) {
            MBeanServerConnection server = connector.getMBeanServerConnection();
            ObjectName pattern =
                new ObjectName("kafka.network:type=RequestMetrics,name=RequestsPerSec,*");
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
            System.out.println("{}");  // ready
            System.out.flush();
            while (in.readLine() != null) {
                Map<String, Long> counts = new TreeMap<>();
                for (ObjectName name : server.queryNames(pattern, null)) {
                    Object count = server.getAttribute(name, "Count");
                    counts.merge(name.getKeyProperty("request"), ((Number) count).longValue(), Long::sum);
                }
                StringBuilder out = new StringBuilder("{");
                for (Map.Entry<String, Long> e : counts.entrySet()) {
                    if (out.length() > 1) out.append(", ");
                    out.append('"').append(e.getKey()).append("\": ").append(e.getValue());
                }
                System.out.println(out.append('}'));
                System.out.flush();
            }
        }
    }
}
