"""Reading and checking inventory files, without a database: rows in, good rows and errors out."""

from pathlib import Path

import pytest

from permissions.importer import (
    HostRow,
    ImportFileError,
    RawRow,
    csv_rows,
    format_of,
    json_rows,
    rows_validate,
)

HEADER = "hostname,address,port,datacenter,nodes,channel\n"
GOOD = {"hostname": "web01", "address": "10.0.0.1", "datacenter": "bj1", "nodes": ["corp/x"]}


def check(**change) -> tuple[list[HostRow], list[str]]:
    """Validate one JSON-like row: GOOD with `change` applied (None removes the key)."""
    fields = {**GOOD, **change}
    fields = {k: v for k, v in fields.items() if v is not None}
    rows, errors = rows_validate([RawRow(line=2, fields=fields)])
    return rows, [e.reason for e in errors]


# Formats


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [("a.csv", None, "csv"), ("a.JSON", None, "json"), ("a.txt", "csv", "csv"),
     ("a.csv", "json", "json")],
)
def test_format_comes_from_the_option_else_the_extension(name, fmt, expected):
    assert format_of(Path(name), fmt) == expected


def test_an_unknown_extension_asks_for_format():
    with pytest.raises(ImportFileError, match="--format"):
        format_of(Path("hosts.txt"))


# CSV


def test_csv_rows_carry_physical_line_numbers():
    text = HEADER + "a,1.1.1.1,,dc,x,\n\nb,1.1.1.2,,dc,\"x;\ny\",\nc,1.1.1.3,,dc,x,\n"
    rows = csv_rows(text)
    assert [(r.line, r.fields["hostname"]) for r in rows] == [(2, "a"), (4, "b"), (6, "c")]
    assert rows[1].where == "line 4"


def test_csv_nodes_split_on_semicolon_or_bar_and_skip_blanks():
    rows = csv_rows(HEADER + "a,1.1.1.1,,dc, corp/a ;corp/b|corp/c;;,\n")
    assert rows[0].fields["nodes"] == [" corp/a ", "corp/b", "corp/c"]


def test_csv_header_is_case_and_space_insensitive_and_optional_columns_may_be_absent():
    rows = csv_rows(" Hostname , ADDRESS,datacenter,nodes\r\na,1.1.1.1,dc,x\r\n")
    assert rows[0].fields == {"hostname": "a", "address": "1.1.1.1", "datacenter": "dc",
                              "nodes": ["x"]}


def test_csv_row_with_wrong_field_count_is_a_bad_row():
    rows, errors = rows_validate(csv_rows(HEADER + "a,1.1.1.1,,dc,x\n"))
    assert not rows
    assert str(errors[0]) == "line 2: 5 fields, but the header has 6"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the first line must be the header"),
        ("web01,10.0.0.1,7001,dc,x,agent\n", "unknown columns 'web01', '10.0.0.1'"),
        ("hostname,address,datacenter,nodes,rack,owner\n", "unknown columns 'rack', 'owner'"),
        ("hostname,address,nodes\n", "missing columns: datacenter in the header"),
        ("hostname,address,datacenter,nodes,nodes\n", "repeated columns: nodes"),
    ],
)
def test_csv_header_problems_refuse_the_file(text, message):
    with pytest.raises(ImportFileError, match=message):
        csv_rows(text)


# JSON


def test_json_rows_carry_the_line_each_object_starts_on():
    text = '[\n  {"hostname": "a"},\n\n  {\n    "hostname": "b"\n  }, {"hostname": "c"}\n]\n'
    rows = json_rows(text)
    assert [(r.line, r.item, r.fields["hostname"]) for r in rows] == [
        (2, 1, "a"), (4, 2, "b"), (6, 3, "c")
    ]
    assert rows[1].where == "line 4 (item 2)"


def test_json_item_that_is_not_an_object_is_a_bad_row():
    rows, errors = rows_validate(json_rows('[["web01"]]'))
    assert str(errors[0]) == "line 1 (item 1): expected an object, got list"


def test_json_empty_list_has_no_rows():
    assert json_rows(" [ ] \n") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"hostname": "a"}', "expected a JSON list of host objects"),
        ('[\n {"hostname": "a"}\n {"hostname": "b"}]', "line 3 column 2: expected ','"),
        ('[\n {"hostname": "a",}\n]', "line 2 column 19"),
        ('[{"hostname": "a"},\n]', "line 2 column 1: trailing comma"),
        ('[{"hostname": "a"}', "line 1 column 19"),
        ('[{"hostname": "a"}] []', "extra data after the list"),
        ("", "expected a JSON list"),
    ],
)
def test_malformed_json_refuses_the_file_with_its_place(text, message):
    with pytest.raises(ImportFileError, match=message):
        json_rows(text)


# Field checks


def test_a_good_row_is_normalised_with_defaults():
    rows, errors = check(hostname=" Web01.BJ.example.com ", address="2001:DB8:0::1",
                         nodes=["corp/x", " corp/y ", "corp/x"])
    assert not errors
    assert rows == [HostRow(where="line 2", hostname="web01.bj.example.com",
                            address="2001:db8::1", port=7001, datacenter="bj1",
                            nodes=("corp/x", "corp/y"), channel="agent", ssh_port=22,
                            ssh_user="root", ssh_host_key="")]


@pytest.mark.parametrize(
    ("change", "expected"),
    [({"port": "22"}, 22), ({"port": 22}, 22), ({"port": " "}, 7001),
     ({"address": "db01.Example.com"}, "db01.example.com"), ({"ssh_port": "2222"}, 2222),
     ({"ssh_user": "deploy"}, "deploy"),
     ({"ssh_host_key": " SHA256:" + "A" * 43 + "  (ED25519)"}, "SHA256:" + "A" * 43 + " (ED25519)"),
     ({"ssh_host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMXjV2mvdGJRxgV0UNbVFsEbNGxoOUNuY"
                       "cQ2S7QZdCSR x@y"},
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMXjV2mvdGJRxgV0UNbVFsEbNGxoOUNuYcQ2S7QZdCSR x@y")],
)
def test_good_values(change, expected):
    rows, errors = check(**change)
    assert not errors
    (name, _), = change.items()
    assert getattr(rows[0], name) == expected


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"hostname": None}, "hostname: required"),
        ({"hostname": "  "}, "hostname: required"),
        ({"hostname": "web_01"}, "hostname: 'web_01' is not a valid DNS name"),
        ({"hostname": "-web"}, "hostname: '-web' is not a valid DNS name"),
        ({"hostname": "a" * 64}, "is not a valid DNS name"),
        ({"hostname": ".".join(["a" * 60] * 5)}, "is not a valid DNS name"),
        ({"hostname": 12}, "hostname: expected text, got 12"),
        ({"address": "999.1.1.1"}, "address: '999.1.1.1' is neither an IP address nor a DNS"),
        ({"address": "10.0.0.1:22"}, "address: '10.0.0.1:22' is not a valid DNS name"),
        ({"port": "0"}, "port: expected a whole number 1..65535, got 0"),
        ({"port": 65536}, "port: expected a whole number 1..65535, got 65536"),
        ({"port": "22a"}, "port: expected a whole number 1..65535, got '22a'"),
        ({"port": True}, "port: expected a whole number"),
        ({"port": 22.0}, "port: expected a whole number"),
        ({"datacenter": "bj 1"}, "datacenter: 'bj 1' is not a datacenter name"),
        ({"datacenter": "d" * 65}, "is not a datacenter name"),
        ({"nodes": []}, "nodes: at least one node path is required"),
        ({"nodes": None}, "nodes: at least one node path is required"),
        ({"nodes": "corp/x"}, "nodes: expected a list of node paths, got 'corp/x'"),
        ({"nodes": ["corp//x"]}, "nodes: malformed node path: 'corp//x'"),
        ({"nodes": ["/corp/x"]}, "nodes: malformed node path: '/corp/x'"),
        ({"nodes": ["corp/a b"]}, "nodes: node name 'a b' in 'corp/a b'"),
        ({"nodes": ["corp/.."]}, "nodes: node name '..' in 'corp/..'"),
        ({"nodes": ["corp/" + "n" * 101]}, "nodes: malformed node path"),
        ({"nodes": ["/".join(["n" * 99] * 11)]}, "nodes: node path longer than 1000"),
        ({"channel": "telnet"}, "channel: expected agent or ssh, got 'telnet'"),
        ({"ssh_host_key": "trust me"}, "ssh_host_key: unreadable ssh_host_key"),
        ({"ssh_host_key": "SHA256:short"}, "ssh_host_key: unreadable"),
        ({"ssh_user": "Root Admin"}, "ssh_user: 'Root Admin' is not an account name"),
        ({"ssh_port": 0}, "ssh_port: expected a whole number 1..65535"),
        ({"rack": "r1", "owner": "x"}, "unknown keys: owner, rack"),
    ],
)
def test_bad_values_are_named_with_their_column(change, reason):
    rows, errors = check(**change)
    assert not rows
    assert len(errors) == 1
    assert reason in errors[0]


def test_every_problem_of_a_row_is_reported_at_once():
    _, errors = check(port="0", channel="telnet")
    assert errors == ["port: expected a whole number 1..65535, got 0; "
                      "channel: expected agent or ssh, got 'telnet'"]


def test_duplicate_hostnames_make_every_copy_bad_naming_the_others():
    raws = [RawRow(line=n, fields={**GOOD, "hostname": name})
            for n, name in [(2, "web01"), (3, "web02"), (4, "WEB01"), (5, "web01")]]
    rows, errors = rows_validate(raws)
    assert [r.hostname for r in rows] == ["web02"]
    assert [str(e) for e in errors] == [
        "line 2: duplicate hostname web01 (also line 4, line 5)",
        "line 4: duplicate hostname web01 (also line 2, line 5)",
        "line 5: duplicate hostname web01 (also line 2, line 4)",
    ]


def test_a_row_bad_for_another_reason_still_counts_as_a_duplicate():
    raws = [RawRow(line=2, fields={**GOOD, "port": "x"}), RawRow(line=3, fields=GOOD)]
    rows, errors = rows_validate(raws)
    assert not rows
    assert "duplicate hostname web01 (also line 3)" in errors[0].reason
    assert str(errors[1]) == "line 3: duplicate hostname web01 (also line 2)"
