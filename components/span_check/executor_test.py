"""The raw-file checks on real files: each finding names the column/line and says what blocks."""

import pytest

from components.span_check.executor import check_files, duplicate_limit
from components.span_check.spec import MAX_DUPLICATE_FRACTION_KEY

SCHEMA = {
    "fare": {"type": "FLOAT", "required": True},
    "tips": {"type": "FLOAT", "required": True},
    "company": {"type": "BYTES", "required": False},
}


def _check(tmp_path, text, max_duplicates=0.05, data=None):
    path = tmp_path / "data.csv"
    if data is None:
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(data)
    return check_files([path], SCHEMA, "2026-12-01", max_duplicates)


def _kinds(findings):
    return sorted((f["kind"], f["feature"]) for f in findings if f["blocking"])


def test_a_clean_file_passes_and_counts_rows(tmp_path):
    findings, facts = _check(tmp_path, "fare,tips,company\n1.5,0.2,A\n2,0,\n3.25,1e-1,B\n")
    assert findings == []
    assert (facts.files, facts.rows, facts.duplicate_rows) == (1, 3, 0)


def test_header_problems_name_the_column(tmp_path):
    findings, _ = _check(tmp_path, "fare,company,surge\n1.5,A,2\n")
    assert _kinds(findings) == [("missing_column", "tips"), ("unknown_column", "surge")]
    assert "accept the change with `mlops schema accept --date 2026-12-01`" in findings[0]["fix"]


def test_text_in_a_numeric_column_is_counted_with_an_example(tmp_path):
    findings, _ = _check(tmp_path, "fare,tips,company\nn/a,0.2,A\n2,0,B\ntwelve,1,C\n")
    [finding] = findings
    assert finding["kind"] == "not_numeric" and finding["values"] == 2
    assert "fare: 2 of 3 values are not numbers" in finding["message"] and "'n/a'" in finding["message"]


def test_a_row_with_an_extra_field_is_found_on_its_line(tmp_path):
    findings, facts = _check(tmp_path, "fare,tips,company\n1,0,A\n2,0,B,stray\n3,0,C\n")
    [finding] = findings
    assert finding["kind"] == "malformed_row" and "first on line 3" in finding["message"]
    assert facts.rows == 2  # the bad row is not counted as data


def test_latin1_bytes_name_the_column_and_line(tmp_path):
    data = "fare,tips,company\n1,0,A\n".encode() + "2,0,Caf\u00e9\n".encode("latin-1")
    findings, _ = _check(tmp_path, None, data=data)
    [finding] = findings
    assert finding["kind"] == "non_utf8" and finding["feature"] == "company"
    assert "first on line 3" in finding["message"]


@pytest.mark.parametrize("limit, blocked", [(0.5, False), (0.2, True)])
def test_duplicate_rows_block_above_the_limit(tmp_path, limit, blocked):
    rows = "".join(f"{i},0,A\n" for i in range(7)) + "1,0,A\n" * 3  # 3 of 10 rows repeat row "1,0,A"
    findings, facts = _check(tmp_path, "fare,tips,company\n" + rows, max_duplicates=limit)
    assert facts.duplicate_rows == 3
    assert bool(findings) is blocked


def test_header_only_and_empty_files_block(tmp_path):
    assert _kinds(_check(tmp_path, "fare,tips,company\n")[0]) == [("empty_file", "(span)")]
    assert _kinds(_check(tmp_path, "")[0]) == [("empty_file", "(span)")]


def test_a_duplicate_limit_of_zero_is_kept_not_replaced_by_the_default():
    assert duplicate_limit({MAX_DUPLICATE_FRACTION_KEY: 0.0}) == 0.0
    assert duplicate_limit({MAX_DUPLICATE_FRACTION_KEY: 0.2}) == 0.2
    assert duplicate_limit({}) == 0.05


@pytest.mark.parametrize("block_bytes", [7, 64, 1 << 20])
def test_blocks_of_any_size_find_the_same(tmp_path, monkeypatch, block_bytes):
    """Files are read a block of lines at a time: a block boundary changes no finding and no fact."""
    import components.span_check.executor as executor

    monkeypatch.setattr(executor, "BLOCK_BYTES", block_bytes)
    rows = "".join(f"{i},0,A\r\n" for i in range(20)) + "1,0,A\r\n" * 3 + "x,0,B\r\n2,0,B,stray\r\n\r\n4,0,\"C,D\"\r\n"
    findings, facts = _check(tmp_path, "fare,tips,company\r\n" + rows, max_duplicates=0.5)
    assert (facts.rows, facts.duplicate_rows, facts.inputs[0]["rows"]) == (25, 3, 25)
    assert _kinds(findings) == [("malformed_row", "(span)"), ("not_numeric", "fare")]
    assert "first on line 26" in findings[0]["message"] and "'x'" in findings[1]["message"]
