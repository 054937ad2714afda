import java.sql.*;
import java.util.*;

/** pgjdbc against prognos: connect, DatabaseMetaData, a prepared query. Exit code 0 = pass. */
public class JdbcSmoke {
    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("FAILED: " + what);
            System.exit(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        try (Connection c = DriverManager.getConnection(url, "prognos", "")) {
            DatabaseMetaData md = c.getMetaData();
            check(md.getDatabaseProductName().equals("PostgreSQL"), "product name " + md.getDatabaseProductName());
            Set<String> tables = new HashSet<>();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            check(tables.contains("customers"), "getTables lists customers: " + tables);
            List<String> cols = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", "customers", "%")) {
                while (rs.next()) cols.add(rs.getString("COLUMN_NAME"));
            }
            check(cols.contains("monthly_charges") && cols.contains("churned"), "getColumns: " + cols);
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT plan, count(*) AS n FROM customers WHERE tenure_months > ? GROUP BY plan ORDER BY plan")) {
                ps.setInt(1, 12);
                int groups = 0;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        groups++;
                        check(rs.getLong("n") > 0, "count per plan");
                    }
                }
                check(groups == 3, "three plans, got " + groups);
            }
            try (Statement st = c.createStatement()) {
                try {
                    st.executeQuery("SELECT * FROM no_such_table");
                    check(false, "error expected");
                } catch (SQLException e) {
                    check("42P01".equals(e.getSQLState()), "sqlstate " + e.getSQLState());
                }
                try (ResultSet rs = st.executeQuery("SELECT 1")) {
                    check(rs.next() && rs.getInt(1) == 1, "connection usable after error");
                }
            }
        }
        System.out.println("jdbc ok");
    }
}
