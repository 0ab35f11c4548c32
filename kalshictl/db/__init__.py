"""PostgreSQL plumbing: DSNs, connections, embedded clusters, migrations, roles."""
