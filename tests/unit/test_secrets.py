"""Pure logic of project secrets: the key ring (AES-GCM, key ids, authenticated data), masking of
output chunks (every split point), and the ``env:`` field of jobs and tasks."""

from __future__ import annotations

import base64
import itertools
import random
from pathlib import Path

import pytest

from cluster.errors import InvalidInput
from cluster.fields import SecretRef
from cluster.masking import MASK, MaskedOutput, Masker
from cluster.models import JobSpec, parse_model, secret_refs
from cluster.secret_store import check_value, references
from cluster.secretbox import KeyRing, Sealed, SecretUnreadable, key_id, new_key
from cluster.workflows import parse_workflow

# -- key ring ------------------------------------------------------------------------------------


def test_key_file_lines_comments_and_the_first_key_seals():
    a, b = new_key(), new_key()
    ring = KeyRing.parse(f"# current\n{a}\n\n  {b}  \n")
    assert ring.current == key_id(base64.b64decode(a))
    assert ring.ids == [key_id(base64.b64decode(a)), key_id(base64.b64decode(b))]
    urlsafe = base64.urlsafe_b64encode(base64.b64decode(b)).decode().rstrip("=")
    assert KeyRing.parse(urlsafe).current == key_id(base64.b64decode(b))


@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "not base64 at all!", base64.b64encode(b"short").decode()]
)
def test_unusable_key_files_are_refused_naming_the_setting(text):
    with pytest.raises(InvalidInput) as err:
        KeyRing.parse(text)
    assert err.value.field == "secrets_key_file"


def test_seal_and_open_round_trip_with_fresh_nonces():
    ring = KeyRing.parse(new_key())
    one = ring.seal("p", "db", b"hunter2")
    two = ring.seal("p", "db", b"hunter2")
    assert one.nonce != two.nonce and one.ciphertext != two.ciphertext
    assert b"hunter2" not in one.ciphertext
    assert ring.open("p", "db", one) == b"hunter2"
    assert ring.open("p", "db", two) == b"hunter2"


@pytest.mark.parametrize(("project", "name"), [("q", "db"), ("p", "other"), ("p", "db2")])
def test_a_value_copied_to_another_project_or_name_does_not_decrypt(project, name):
    ring = KeyRing.parse(new_key())
    sealed = ring.seal("p", "db", b"hunter2")
    with pytest.raises(SecretUnreadable):
        ring.open(project, name, sealed)


def test_altered_ciphertext_or_key_id_does_not_decrypt():
    old, new = new_key(), new_key()
    ring = KeyRing.parse(f"{new}\n{old}")
    sealed = KeyRing.parse(old).seal("p", "db", b"v")
    assert ring.open("p", "db", sealed) == b"v"  # an older key still opens
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(SecretUnreadable):
        ring.open("p", "db", Sealed(sealed.key_id, sealed.nonce, flipped))
    with pytest.raises(SecretUnreadable):  # the id is authenticated: relabelled, it fails
        ring.open("p", "db", Sealed(ring.current, sealed.nonce, sealed.ciphertext))


def test_rotation_semantics_first_key_seals_and_a_removed_key_no_longer_opens():
    old, new = new_key(), new_key()
    sealed = KeyRing.parse(old).seal("p", "db", b"v")
    step1 = KeyRing.parse(f"{old}\n{new}")  # new key known everywhere, not yet sealing
    assert step1.seal("p", "x", b"v").key_id == key_id(base64.b64decode(old))
    step2 = KeyRing.parse(f"{new}\n{old}")  # promoted: seals with the new key
    resealed = step2.seal("p", "db", step2.open("p", "db", sealed))
    assert resealed.key_id == key_id(base64.b64decode(new))
    step3 = KeyRing.parse(new)  # old key removed
    assert step3.open("p", "db", resealed) == b"v"
    with pytest.raises(SecretUnreadable, match="does not hold"):
        step3.open("p", "db", sealed)


@pytest.mark.parametrize(
    ("value", "ok"), [(b"", False), (b"x", True), (b"a\0b", False), (b"x" * 16384, True)]
)
def test_value_limits(value, ok):
    if ok:
        check_value(value)
    else:
        with pytest.raises(InvalidInput) as err:
            check_value(value)
        assert err.value.field == "value"
    with pytest.raises(InvalidInput):
        check_value(b"x" * 16385)


# -- masking -------------------------------------------------------------------------------------


def reference_mask(data: bytes, values: list[bytes]) -> bytes:
    """Mask the union of all occurrences, each maximal stretch as one MASK (the definition)."""
    covered = [False] * len(data)
    for v in values:
        for i in range(len(data) - len(v) + 1):
            if data[i : i + len(v)] == v:
                for j in range(i, i + len(v)):
                    covered[j] = True
    out, i = bytearray(), 0
    while i < len(data):
        if covered[i]:
            while i < len(data) and covered[i]:
                i += 1
            out += MASK
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def stream(values: list[bytes], chunks: list[bytes]) -> tuple[bytes, int]:
    m = Masker(values)
    out, most = b"", 0
    for c in chunks:
        out += m.feed(c)
        most = max(most, m.held)
    return out + m.flush(), most


CASES = [
    ([b"hunter2"], b"pw=hunter2; again hunter2!"),
    ([b"abab"], b"xxababababyy"),  # overlapping occurrences of one value
    ([b"abc", b"cdefgh"], b"..abcdefgh.."),  # two values overlapping
    ([b"s3cr3t", b"s3c"], b"s3c s3cr3 s3cr3t s3"),  # a value that is a prefix of another
    ([b"aaa"], b"aaaaaaa b aa"),
    ([b"\xff\x00\x01"], b"bin \xff\x00\x01 end \xff\x00"),
    ([b"tok"], b"tok"),
    ([b"end"], b"the very end"),
]


@pytest.mark.parametrize(("values", "data"), CASES)
def test_every_single_split_point(values, data):
    want = reference_mask(data, values)
    for v in values:
        assert v not in want
    for cut in range(len(data) + 1):
        got, most = stream(values, [data[:cut], data[cut:]])
        assert got == want, (cut, got)
        assert most <= max(map(len, values)) - 1


@pytest.mark.parametrize(("values", "data"), CASES)
def test_byte_by_byte_and_every_pair_of_split_points(values, data):
    want = reference_mask(data, values)
    assert stream(values, [bytes([b]) for b in data])[0] == want
    for i, j in itertools.combinations(range(len(data) + 1), 2):
        assert stream(values, [data[:i], data[i:j], data[j:]])[0] == want, (i, j)


def test_random_streams_against_the_definition():
    rng = random.Random(7)
    for _ in range(1000):
        values = [bytes(rng.choice(b"ab") for _ in range(rng.randint(1, 5))) for _ in range(2)]
        data = bytes(rng.choice(b"abc") for _ in range(rng.randint(0, 40)))
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 6))))
        chunks = [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]
        assert stream(values, chunks)[0] == reference_mask(data, values), (values, data, cuts)


def test_ordinary_output_is_not_held_back():
    m = Masker([b"hunter2"])
    assert m.feed(b"progress 10%\n") == b"progress 10%\n"
    assert m.feed(b"user hun") == b"user "  # could be the start of the value: held
    assert m.held == 3
    assert m.feed(b"gry\n") == b"hungry\n"
    assert m.feed(b"hunter") == b""
    assert m.flush() == b"hunter"  # the stream ended: it was not the value


def test_held_bytes_are_bounded_by_the_longest_value():
    value = b"x" * 100
    m = Masker([value, b"short"])
    for _ in range(500):
        m.feed(b"x" * 37)
        assert m.held <= 99
    assert value not in m.flush()


def test_masked_output_per_stream_and_flush():
    got: list[tuple[str, bytes]] = []
    out = MaskedOutput(lambda s, d: got.append((s, d)), [b"hunter2"])
    out.write("stdout", b"a hun")
    out.write("stderr", b"ter2 b")  # another stream: no join across streams
    out.write("stdout", b"ter2 c")
    out.flush()
    joined = {s: b"".join(d for t, d in got if t == s) for s in ("stdout", "stderr")}
    assert joined == {"stdout": b"a *** c", "stderr": b"ter2 b"}


def test_no_values_pass_through():
    m = Masker([])
    assert m.feed(b"abc") == b"abc" and m.flush() == b""


# -- env: references -----------------------------------------------------------------------------


def test_env_plain_values_and_secret_references():
    job = parse_model(
        JobSpec,
        {"name": "j", "command": "x", "env": {"A": 1, "PATH": "/opt/bin", "DB": {"secret": "db"}}},
    )
    assert job.env == {"A": "1", "PATH": "/opt/bin", "DB": SecretRef(secret="db")}
    assert secret_refs(job.env) == {"DB": "db"}
    assert references(job.model_dump(mode="json")) == {"env.DB.secret": "db"}


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"CRONMESH_RUN_ID": "x"}, "env.CRONMESH_RUN_ID"),
        ({"cronmesh_job": "x"}, "env.cronmesh_job"),
        ({"1BAD": "x"}, "env.1BAD"),
        ({"A-B": "x"}, "env.A-B"),
        ({"DB": {"secret": "Not A Name"}}, "env.DB.secret"),
        ({"DB": {"secret": "db", "extra": 1}}, "env.DB"),
        ({"DB": ["x"]}, "env.DB"),
        ({"DB": "a\0b"}, "env.DB"),
        ({"DB": "x" * 4097}, "env.DB"),
        ({f"V{i}": "x" for i in range(65)}, "env"),
    ],
)
def test_bad_env_names_the_field(env, field):
    with pytest.raises(InvalidInput) as err:
        parse_model(JobSpec, {"name": "j", "command": "x", "env": env})
    assert err.value.field == field, err.value.message


def test_workflow_task_env_reaches_the_task_run_snapshot():
    wf = parse_workflow(
        {
            "name": "w",
            "tasks": [
                {"name": "a", "command": "x", "env": {"TOKEN": {"secret": "api"}}},
                {"name": "b", "command": "y", "depends_on": ["a"]},
            ],
        }
    )
    assert references(wf.model_dump(mode="json")) == {"tasks.0.env.TOKEN.secret": "api"}
    assert secret_refs(wf.job_spec(wf.task("a")).env) == {"TOKEN": "api"}


def test_dev_creates_one_key_ring_0600_and_keeps_it(tmp_path, monkeypatch):
    from nodes.cli.dev import _secrets_key

    monkeypatch.delenv("CRONMESH_SECRETS_KEY_FILE", raising=False)
    path = _secrets_key(tmp_path)
    assert (Path(path).stat().st_mode & 0o777) == 0o600
    first = Path(path).read_text()
    assert KeyRing.parse(first).current
    assert _secrets_key(tmp_path) == path and Path(path).read_text() == first


def test_audit_redaction_keeps_secret_references_and_drops_sealed_values():
    from cluster.audit import redact

    job = {"name": "j", "env": {"DB": {"secret": "db-password"}, "X": "plain"}}
    assert redact(job) == job  # which secret a job uses is worth auditing; it is not a value
    sealed = {"name": "db", "key_id": "k1", "nonce": "bm9uY2U=", "ciphertext": "Y3Q="}
    assert redact(sealed) == {**sealed, "nonce": "<redacted>", "ciphertext": "<redacted>"}
    hook = {"url": "https://h", "secret": "hmac-key"}
    assert redact({"env": {"W": hook}, "webhook": hook})["webhook"]["secret"] == "<redacted>"
    assert redact({"env": {"W": hook}})["env"]["W"]["secret"] == "<redacted>"


def test_a_result_is_masked_in_keys_and_values_at_any_depth():
    from cluster.masking import mask_result

    result = {"k": ["x-hunter2-y", {"hunter2": 1, "n": 2}], "s": "hunter", "b": True}
    assert mask_result(result, [b"hunter2", b"hunt"]) == {
        "k": ["x-***-y", {"***": 1, "n": 2}],
        "s": "***er",
        "b": True,
    }
