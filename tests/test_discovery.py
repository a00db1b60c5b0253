"""Discovery's matching and the mapping file it writes, on the data both APIs return (pure functions:
the end-to-end runs over both simulators are in test_migration_tools.py)."""

from __future__ import annotations

from typing import Any

import yaml

from shim.migration.discovery import discover
from shim.migration.mapping_file import with_entries
from shim.translate.sdrs_models import ReplicationPair, ServerGroup
from shim.translate.tables import GroupMapping

PROJECT = "0970dd7a1300f5672ff2c003c60ae115"


def uuid(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-000000000000"


def legacy_group(n: int, name: str, pairs: list[int]) -> dict[str, Any]:
    return {"id": uuid(n), "name": name, "replication_ids": [uuid(pair) for pair in pairs]}


def legacy_pair(n: int, group: int, production: int, dr: int) -> dict[str, Any]:
    return {"id": uuid(n), "replication_consistency_group_id": uuid(group),
            "volume_ids": f"{uuid(production)},{uuid(dr)}"}


def sdrs_group(n: int) -> ServerGroup:
    return ServerGroup(id=uuid(n), name=f"pg-{n}", status="protected")


def sdrs_pair(n: int, group: int, production: int, dr: int) -> ReplicationPair:
    return ReplicationPair(id=uuid(n), server_group_id=uuid(group), status="protected",
                           volume_ids=f"{uuid(production)},{uuid(dr)}")


def test_a_group_whose_volumes_are_split_over_two_sdrs_groups_is_ambiguous():
    found = discover(PROJECT, [legacy_group(1, "split", [11, 12])],
                     [legacy_pair(11, 1, 101, 102), legacy_pair(12, 1, 103, 104)],
                     [sdrs_group(50), sdrs_group(60)], [sdrs_pair(51, 50, 101, 901), sdrs_pair(61, 60, 103, 903)], [])

    (finding,) = found.findings
    assert finding.verdict == "ambiguous" and "split over several SDRS protection groups" in finding.reason
    assert uuid(101) in finding.reason and uuid(103) in finding.reason
    assert found.new_entries() == []


def test_an_sdrs_group_with_more_pairs_than_the_legacy_group_is_not_a_match():
    found = discover(PROJECT, [legacy_group(1, "a", [11]), legacy_group(2, "b", [12])],
                     [legacy_pair(11, 1, 101, 102), legacy_pair(12, 2, 103, 104)],
                     [sdrs_group(50)], [sdrs_pair(51, 50, 101, 901), sdrs_pair(52, 50, 103, 903)], [])

    assert {finding.verdict for finding in found.findings} == {"unmatched"}
    assert all("has 2 pair(s), the legacy group 1" in finding.reason for finding in found.findings)


def test_an_sdrs_group_two_legacy_groups_match_is_written_for_neither():
    """One SDRS pair whose two disks are the production disks of two legacy groups."""
    found = discover(PROJECT, [legacy_group(1, "a", [11]), legacy_group(2, "b", [12])],
                     [legacy_pair(11, 1, 101, 102), legacy_pair(12, 2, 103, 104)],
                     [sdrs_group(50)], [sdrs_pair(51, 50, 101, 103)], [])

    assert [(finding.verdict, finding.reason) for finding in found.findings] == [
        ("ambiguous", f"'pg-50' ({uuid(50)}) also matches legacy group 'b' ({uuid(2)})"),
        ("ambiguous", f"'pg-50' ({uuid(50)}) also matches legacy group 'a' ({uuid(1)})")]
    assert found.new_entries() == [] and found.unclaimed_sdrs_groups == [(uuid(50), "pg-50")]


def test_a_new_dr_disk_on_the_sdrs_side_still_matches_and_a_mapped_group_stays_as_the_file_says():
    mapped = GroupMapping(PROJECT, uuid(2), uuid(70))
    found = discover(PROJECT, [legacy_group(1, "moved", [11]), legacy_group(2, "known", [12])],
                     [legacy_pair(11, 1, 101, 102), legacy_pair(12, 2, 103, 104)],
                     [sdrs_group(50), sdrs_group(60)], [sdrs_pair(51, 50, 101, 999), sdrs_pair(61, 60, 103, 998)],
                     [mapped])

    verdicts = {finding.rcg_id: (finding.verdict, finding.reason) for finding in found.findings}
    assert verdicts[uuid(1)][0] == "matched"
    assert verdicts[uuid(2)] == ("already mapped", f"mapped to protection group {uuid(70)} in mode sdrs; its volumes "
                                 f"point to 'pg-60' ({uuid(60)}) instead")
    assert found.new_entries() == [{"project_id": PROJECT, "replication_consistency_group_id": uuid(1),
                                    "protection_group_id": uuid(50), "mode": "shadow", "legacy": {
                                        "name": "moved", "description": None, "pairs": [
                                            {"id": uuid(11), "sdrs_id": uuid(51), "volume_id": uuid(101),
                                             "name": None, "description": None}]}}]


NEW = {"project_id": PROJECT, "replication_consistency_group_id": uuid(1), "protection_group_id": uuid(50),
       "mode": "shadow"}


def test_new_entries_are_appended_below_the_operators_comments_in_the_lists_own_indentation():
    text = "# our groups\nconsistency_groups:\n  # the first\n  - project_id: a\n    protection_group_id: b\n"
    written, kept = with_entries(text, [NEW], ["found"])

    assert kept and written.startswith(text)
    assert written[len(text):] == (f"  # found\n  - project_id: {PROJECT}\n    replication_consistency_group_id: "
                                   f"{uuid(1)}\n    protection_group_id: {uuid(50)}\n    mode: shadow\n")


def test_a_list_written_in_flow_style_is_rewritten_from_its_data_and_says_so():
    text = "projects: [{project_id: p, mode: shadow}]\nconsistency_groups: []  # none yet\n"
    written, kept = with_entries(text, [NEW], ["found"])

    assert not kept
    assert yaml.safe_load(written) == {"projects": [{"project_id": "p", "mode": "shadow"}], "consistency_groups": [NEW]}
    assert written.startswith("# Written by `shim discover` from the file's data")


def test_two_legacy_pairs_on_the_disks_of_one_sdrs_pair_do_not_correspond_and_are_not_written():
    """Same pair count, every production volume in the SDRS group, but no one-to-one correspondence."""
    found = discover(PROJECT, [legacy_group(1, "a", [11, 12])],
                     [legacy_pair(11, 1, 101, 102), legacy_pair(12, 1, 103, 104)],
                     [sdrs_group(50)], [sdrs_pair(51, 50, 101, 103), sdrs_pair(52, 50, 901, 902)], [])

    (finding,) = found.findings
    assert finding.verdict == "ambiguous" and "do not correspond one to one" in finding.reason
    assert found.new_entries() == []


def test_a_legacy_block_with_any_text_is_appended_and_reads_back_as_written():
    legacy = {"name": "web: tier #1 'prod'", "description": "line one\nline two", "pairs": [
        {"id": uuid(11), "sdrs_id": uuid(51), "volume_id": uuid(101), "name": "- dash", "description": None}]}
    text = "consistency_groups:\n  - project_id: a\n    protection_group_id: b\n"
    written, kept = with_entries(text, [{**NEW, "legacy": legacy}], ["found"])

    assert kept and written.startswith(text)
    assert yaml.safe_load(written)["consistency_groups"][1] == {**NEW, "legacy": legacy}


def test_an_entry_mapped_without_a_legacy_identity_is_offered_its_block_and_one_with_it_is_not():
    from shim.migration.discovery import render_findings
    from shim.translate.identity import GroupIdentity

    groups = [legacy_group(1, "a", [11]), legacy_group(2, "b", [12])]
    pairs = [legacy_pair(11, 1, 101, 102), legacy_pair(12, 2, 103, 104)]
    sdrs = ([sdrs_group(50), sdrs_group(60)], [sdrs_pair(51, 50, 101, 901), sdrs_pair(61, 60, 103, 903)])
    mapped = [GroupMapping(PROJECT, uuid(1), uuid(50)),
              GroupMapping(PROJECT, uuid(2), uuid(60), identity=GroupIdentity())]
    found = discover(PROJECT, groups, pairs, *sdrs, mapped)

    offered = {finding.rcg_id: finding.legacy for finding in found.of("already mapped")}
    assert offered[uuid(2)] is None
    assert offered[uuid(1)] == {"name": "a", "description": None, "pairs": [
        {"id": uuid(11), "sdrs_id": uuid(51), "volume_id": uuid(101), "name": None, "description": None}]}
    text = render_findings(found)
    assert "it has no legacy identity recorded: add this `legacy:` block to its entry" in text
    assert (f"      legacy:\n        name: a\n        description: null\n        pairs:\n"
            f"        - id: {uuid(11)}\n") in text
    assert found.new_entries() == []


def test_a_legacy_pair_without_a_volume_leaves_the_group_unwritten_rather_than_forgotten():
    """Clients know that pair's id: a mapping that could not record it would show them a drift."""
    bare = {"id": uuid(12), "replication_consistency_group_id": uuid(1), "volume_ids": ""}
    found = discover(PROJECT, [legacy_group(1, "a", [11, 12])], [legacy_pair(11, 1, 101, 102), bare],
                     [sdrs_group(50)], [sdrs_pair(51, 50, 101, 901)], [])

    (finding,) = found.findings
    assert (finding.verdict, finding.reason) == ("ambiguous", f"legacy pair {uuid(12)} has no volume to match by")
    assert found.new_entries() == []
