"""Many nodes on one PostgreSQL database: partitions, leases, takeover and forwarding."""
