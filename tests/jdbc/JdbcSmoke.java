import java.sql.*;
import java.util.*;

/**
 * pgjdbc against prognos: connect, DatabaseMetaData, a prepared query, and a low-privilege
 * role's refusals, masked values and table list; with a user and a password after the url, a
 * connection over TLS (ssl=true, the server's certificate verified) with SCRAM. Exit code 0 =
 * pass.
 */
public class JdbcSmoke {
    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("FAILED: " + what);
            System.exit(1);
        }
    }

    /** Run a query the way DBeaver does (a prepared statement) and return its rows. */
    static List<Map<String, Object>> rows(Connection c, String sql) throws SQLException {
        List<Map<String, Object>> out = new ArrayList<>();
        try (PreparedStatement ps = c.prepareStatement(sql); ResultSet rs = ps.executeQuery()) {
            ResultSetMetaData md = rs.getMetaData();
            while (rs.next()) {
                Map<String, Object> row = new HashMap<>();
                for (int i = 1; i <= md.getColumnCount(); i++) row.put(md.getColumnLabel(i), rs.getObject(i));
                out.add(row);
            }
        }
        return out;
    }

    /** The startup and navigator queries DBeaver 25 sends through pgjdbc (captured from its PostgreSQL plugin). */
    static void dbeaverNavigator(Connection c) throws SQLException {
        try (Statement st = c.createStatement()) {
            st.execute("SET extra_float_digits = 3");
            st.execute("SET application_name = 'DBeaver 25.1.5 - Main <prognos>'");
        }
        List<Map<String, Object>> r = rows(c, "SELECT current_schema(),session_user");
        check("public".equals(r.get(0).get("current_schema")), "current_schema: " + r);
        List<Map<String, Object>> ns = rows(c, "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n "
                + "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 "
                + "AND d.classoid='pg_namespace'::regclass ORDER BY nspname");
        Object publicOid = null;
        for (Map<String, Object> n : ns) if ("public".equals(n.get("nspname"))) publicOid = n.get("oid");
        check(publicOid != null, "pg_namespace lists public: " + ns);
        r = rows(c, "SELECT typinput='pg_catalog.array_in'::regproc as is_array, typtype, typname, pg_type.oid "
                + "FROM pg_catalog.pg_type LEFT JOIN (select ns.oid as nspoid, ns.nspname, r.r from pg_namespace as ns "
                + "join ( select s.r, (current_schemas(false))[s.r] as nspname from generate_series(1, "
                + "array_upper(current_schemas(false), 1)) as s(r) ) as r using ( nspname ) ) as sp "
                + "ON sp.nspoid = typnamespace WHERE pg_type.oid = 1007 ORDER BY sp.r, pg_type.oid DESC");
        check(r.size() == 1 && Boolean.TRUE.equals(r.get(0).get("is_array")), "int4[] is an array type: " + r);
        rows(c, "SHOW search_path");
        r = rows(c, "SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname='prognos'");
        check(r.size() == 1, "pg_database row for prognos: " + r);
        rows(c, "SELECT * FROM pg_catalog.pg_settings where name='standard_conforming_strings'");
        rows(c, "SELECT * FROM pg_catalog.pg_enum WHERE 1<>1 LIMIT 1");
        rows(c, "SELECT reltype FROM pg_catalog.pg_class WHERE 1<>1 LIMIT 1");
        r = rows(c, "SELECT t.oid,t.*,c.relkind,format_type(nullif(t.typbasetype, 0), t.typtypmod) as base_type_name, "
                + "d.description FROM pg_catalog.pg_type t LEFT OUTER JOIN pg_catalog.pg_type et ON et.oid=t.typelem "
                + "LEFT OUTER JOIN pg_catalog.pg_class c ON c.oid=t.typrelid LEFT OUTER JOIN pg_catalog.pg_description d "
                + "ON t.oid=d.objoid WHERE t.typname IS NOT NULL AND (c.relkind IS NULL OR c.relkind = 'c') "
                + "AND (et.typcategory IS NULL OR et.typcategory <> 'C')");
        check(r.size() > 10, "pg_type list: " + r.size());
        List<Map<String, Object>> rels = rows(c, "SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) "
                + "as partition_expr, pg_catalog.pg_get_partkeydef(c.oid) as partition_key FROM pg_catalog.pg_class c "
                + "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 "
                + "AND d.classoid='pg_class'::regclass WHERE c.relnamespace=" + publicOid + " AND c.relkind not in ('i','I','c')");
        Object customersOid = null;
        for (Map<String, Object> rel : rels) if ("customers".equals(rel.get("relname"))) customersOid = rel.get("oid");
        check(customersOid != null, "pg_class lists customers in public: " + rels.size() + " rows");
        List<Map<String, Object>> attrs = rows(c, "SELECT c.relname,a.*,pg_catalog.pg_get_expr(ad.adbin, ad.adrelid, true) "
                + "as def_value,dsc.description,dep.objid FROM pg_catalog.pg_attribute a INNER JOIN pg_catalog.pg_class c "
                + "ON (a.attrelid=c.oid) LEFT OUTER JOIN pg_catalog.pg_attrdef ad ON (a.attrelid=ad.adrelid AND a.attnum = ad.adnum) "
                + "LEFT OUTER JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid) "
                + "LEFT OUTER JOIN pg_depend dep on dep.refobjid = a.attrelid AND dep.deptype = 'i' and dep.refobjsubid = a.attnum "
                + "and dep.classid = dep.refclassid WHERE NOT a.attisdropped AND c.relkind not in ('i','I','c') AND c.oid="
                + customersOid + " ORDER BY a.attnum");
        List<Object> names = new ArrayList<>();
        for (Map<String, Object> a : attrs) names.add(a.get("attname"));
        check(names.contains("monthly_charges") && names.contains("churned"), "pg_attribute of customers: " + names);
        r = rows(c, "SELECT * FROM public.customers LIMIT 200");
        check(r.size() == 200, "data tab reads 200 rows: " + r.size());
        // pgjdbc resolves array element types with its own catalog queries.
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT ARRAY[1, 2, 3] AS a")) {
            check(rs.next(), "array row");
            Array a = rs.getArray(1);
            Object[] vals = (Object[]) a.getArray();
            check(vals.length == 3 && ((Number) vals[2]).intValue() == 3, "array values " + Arrays.toString(vals));
        }
    }

    /** A role granted only SELECT on customers, whose plan column is masked. */
    static void lowPrivilege(String url) throws SQLException {
        try (Connection low = DriverManager.getConnection(url, "jdbc_low", "")) {
            try (Statement st = low.createStatement()) {
                st.executeQuery("SELECT * FROM daily_sales");
                check(false, "daily_sales must be refused");
            } catch (SQLException e) {
                check("42501".equals(e.getSQLState()), "daily_sales: sqlstate " + e.getSQLState());
            }
            List<Map<String, Object>> r = rows(low, "SELECT plan FROM customers LIMIT 20");
            check(r.size() == 20, "customers readable: " + r.size());
            for (Map<String, Object> row : r) {
                String plan = (String) row.get("plan");
                check(plan != null && plan.startsWith("*"), "plan is masked: " + plan);
            }
            Set<String> tables = new TreeSet<>();
            try (ResultSet rs = low.getMetaData().getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            check(tables.equals(Set.of("customers")), "getTables lists what the role may read: " + tables);
        }
    }

    /** Over TLS with a password (SCRAM-SHA-256): the url carries ssl=true and the CA. */
    static void overTls(String url, String user, String password) throws SQLException {
        try (Connection c = DriverManager.getConnection(url, user, password);
             Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("SELECT current_user, 41 + 1")) {
            check(rs.next() && user.equals(rs.getString(1)) && rs.getInt(2) == 42, "query over TLS");
        }
        try {
            DriverManager.getConnection(url, user, password + "x").close();
            check(false, "a wrong password is refused");
        } catch (SQLException e) {
            check("28P01".equals(e.getSQLState()), "wrong password sqlstate " + e.getSQLState());
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        if (args.length == 3) {
            overTls(url, args[1], args[2]);
            System.out.println("jdbc tls ok");
            return;
        }
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
            dbeaverNavigator(c);
            try (Statement st = c.createStatement()) {
                st.execute("CREATE USER jdbc_low");
                st.execute("CREATE MASKING POLICY jdbc_plan ON customers (plan) USING partial(2)");
                st.execute("GRANT SELECT ON customers TO jdbc_low");
            }
        }
        lowPrivilege(url);
        System.out.println("jdbc ok");
    }
}
