"""Reading Ember's metrics file. As Firecracker, a line reports each count
as its change since the line before (and levels as they are), and a line
comes every 60 s besides those FlushMetrics asks for: a test adds up the
lines written since a mark to see what moved."""

import json


def read_lines(path):
    """Every line of the metrics file, parsed."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mark(path):
    """How many lines the file has now: the start of what total() adds."""
    return len(read_lines(path)) if path.exists() else 0


def total(path, group, field, since=0):
    """A count's change over the lines from `since` on (a group a line lacks,
    as in the short line of a fatal signal, counts 0)."""
    return sum(line.get(group, {}).get(field, 0) for line in read_lines(path)[since:])
