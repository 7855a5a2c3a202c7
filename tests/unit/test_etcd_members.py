"""Which etcd member the client moves to when the current one stops answering, and which failed
writes count as never sent (the rest have unknown outcomes)."""

from __future__ import annotations

from cluster.etcd import next_member


def test_moves_to_the_next_member_when_none_failed_before():
    assert next_member(0, [5.0, 0.0, 0.0]) == 1
    assert next_member(2, [0.0, 0.0, 5.0]) == 0


def test_prefers_the_member_that_failed_longest_ago():
    # 1 failed a moment ago, 2 long ago: skip 1
    assert next_member(0, [9.0, 8.0, 1.0]) == 2
    # all failed: the oldest failure first
    assert next_member(1, [3.0, 9.0, 4.0]) == 0


def test_a_single_member_stays_itself():
    assert next_member(0, [7.0]) == 0


def test_cycles_through_every_member_under_repeated_failures():
    failed = [0.0, 0.0, 0.0, 0.0]
    seen, current = [], 0
    for t in range(1, 9):
        failed[current] = float(t)
        current = next_member(current, failed)
        seen.append(current)
    assert seen == [1, 2, 3, 0, 1, 2, 3, 0]


def test_a_write_is_never_sent_only_when_no_connection_ever_carried_it():
    """Issue 25: gRPC says "failed to connect" also when a connection it had opened closed before
    the server's first bytes arrived; a claim was applied under that message. Only a failure to
    establish any connection means "not sent"; everything else is an unknown outcome."""
    import grpc

    from cluster.etcd import never_sent

    unavailable = grpc.StatusCode.UNAVAILABLE
    refused = (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:2379: "
        "Failed to connect to remote host: Connection refused"
    )
    closed = (
        "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:2379: "
        "Socket closed"
    )
    assert never_sent(unavailable, refused)
    assert not never_sent(unavailable, closed)
    assert not never_sent(unavailable, "Connection reset by peer")
    assert not never_sent(grpc.StatusCode.DEADLINE_EXCEEDED, refused)
