"""The local Redis Cluster of ``bench/cluster.py`` and what the tests put it through: who owns
a project's slot, a manual failover, a slot moved to another master."""

from __future__ import annotations

from bench.cluster import LocalCluster, cluster_tools_missing
from proxy.ledger.slots import key_slot

__all__ = ["OperatedCluster", "cluster_tools_missing"]


class OperatedCluster(LocalCluster):
    def master_of_slot(self, slot: int) -> int:
        for port, ranges in self.masters().items():
            if any(start <= slot <= end for start, end in ranges):
                return port
        raise AssertionError(f"no master owns slot {slot}")

    def master_of(self, project: str) -> int:
        return self.master_of_slot(key_slot(project))

    def node_id(self, port: int) -> str:
        return self.client(port).execute_command("CLUSTER MYID").decode()

    def replica_of(self, master_port: int) -> int:
        master_id = self.node_id(master_port)
        for port in self.live_ports():
            role = self.client(port).execute_command("ROLE")
            if role[0] == b"slave" and int(role[2]) == master_port:
                return port
        raise AssertionError(f"master {master_port} ({master_id}) has no replica")

    # -- what the tests do to it ---------------------------------------------------------------

    def fail_over(self, master_port: int) -> int:
        """``CLUSTER FAILOVER`` on the master's replica; returns the new master's port once
        every node agrees."""
        replica = self.replica_of(master_port)
        self.client(replica).execute_command("CLUSTER FAILOVER")
        self._wait(lambda: self.client(replica).execute_command("ROLE")[0] == b"master",
                   f"replica {replica} did not take over")
        self.wait_stable()
        return replica

    def move_slot(self, slot: int, target_port: int, *, batch: int = 10) -> int:
        """Move ``slot`` with its keys to the master on ``target_port``, as a resharding does
        (IMPORTING / MIGRATING, MIGRATE in batches, then the new owner told to every master);
        returns how many keys moved."""
        source_port = self.master_of_slot(slot)
        source, target = self.client(source_port), self.client(target_port)
        source_id, target_id = self.node_id(source_port), self.node_id(target_port)
        target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        while True:
            keys = source.execute_command("CLUSTER GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            source.execute_command("MIGRATE", "127.0.0.1", target_port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
        for port in (target_port, source_port, *self.masters()):
            self.client(port).execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        self.wait_stable()
        return moved

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (a crash: nothing flushed, nobody told)."""
        self.processes[port].kill()
        self.processes[port].wait(10)

    def restart(self, port: int) -> None:
        """Start a killed node again; it rejoins (a master that was replaced, as a replica)."""
        self.run_node(port)
        self._wait(lambda: self.client(port).cluster("INFO").get("cluster_state") == "ok",
                   f"node {port} did not rejoin", timeout=60)
        self.wait_stable()

    def wait_replicated(self, master_port: int) -> None:
        """Until the master's replica has everything the master wrote so far."""
        offset = self.client(master_port).info("replication")["master_repl_offset"]
        replica = self.client(self.replica_of(master_port))
        self._wait(lambda: replica.info("replication")["slave_repl_offset"] >= offset,
                   f"the replica of {master_port} did not catch up")
