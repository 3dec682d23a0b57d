"""Step 4 (part): every key of the chart's values.yaml has a comment line right above it.

usage: values_doc.py VALUES.yaml
"""

import re
import sys


def main():
    path = sys.argv[1]
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    missing, keys = [], 0
    previous = ""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            continue
        m = re.match(r"^\s*(?:- )?([A-Za-z_][\w.-]*):(\s|$)", line)
        if m and not stripped.startswith("#"):
            keys += 1
            if not previous.startswith("#"):
                missing.append("%s:%d: %s" % (path, number, stripped))
        previous = stripped
    for m in missing:
        print("  FAIL: undocumented value (no comment above it): " + m, file=sys.stderr)
    if missing:
        sys.exit(1)
    print("  values.yaml: all %d keys documented" % keys)


if __name__ == "__main__":
    main()
