"""Reading the rows `bench/faults.py --json` prints."""


def problems(row: dict) -> list[str]:
    """What a fault's row shows went wrong, in words."""
    said = []
    if row["terminal_s"] is None or row["terminal_s"] > 60:
        said.append(f"{row['not_terminal']} subtasks not terminal 60 s after the return")
    for key, words in (("duplicated", "jobs run twice"), ("mismatched", "outcomes wrong"),
                       ("server_errors", "5xx answers"), ("sse_missing", "events not streamed"),
                       ("sse_repeated", "events streamed twice"),
                       ("callbacks_missing", "events no callback delivered"),
                       ("callbacks_bad_signature", "badly signed callbacks")):
        if row[key]:
            said.append(f"{row[key]} {words}")
    if not row["events_gapless"]:
        said.append("a gap in the event numbers")
    if row["died"]:
        said.append(f"died without being killed: {', '.join(row['died'])}")
    if row["lost"] and not all(row["lost_reasons"]):
        said.append("lost subtasks without a reason")
    return said
