"""Running Lockstep as a cluster of nodes on one database."""
