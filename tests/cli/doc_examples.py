#!/usr/bin/env python3
# Runs every command example of README.md and man/blkimg.1 and compares the output the
# docs show with what blkimg prints. Called by doc_examples.sh, which builds the images.
#
# What counts as an example (the convention the docs follow):
# - README.md: an indented (or fenced) code block. A block with `$ ` lines is a transcript:
#   each `$ command` is followed by exactly what it prints (stdout and stderr as one
#   stream); no lines means it prints nothing, a line `...` stands for any number of lines.
#   An expected line starting with `blkimg: ` (not `blkimg: warning`) means the command
#   must fail with exit status 1; otherwise it must exit 0. A block whose first line starts
#   with `blkimg ` is a list of commands, each of which must exit 0 (output not compared).
# - man/blkimg.1: `.nf`/`.fi` and `.EX`/`.EE` blocks, read the same way.
# Every other block must be listed in NOT_EXAMPLES with the reason, and every example that
# cannot run as written in SKIP: an unlisted block, or a stale entry, fails the test.
#
# usage: doc_examples.py SRCDIR FIXTURES WORKDIR
# Each block runs in a new directory WORKDIR/block-N where the script FIXTURES made the
# images, its commands in order, with `blkimg` found in PATH (the caller puts the built
# binary there under that name). Some examples run only where they can (NEEDS_*).
import os
import re
import shutil
import subprocess
import sys

# Code blocks that are not blkimg examples: (file, first line) -> why.
NOT_EXAMPLES = {
    ("README.md", "./scripts/demo"):
        "builds the project and installs packages; run by hand, not from a test",
    ("README.md", "bash .ci/run"): "runs the whole suite, this test included",
    ("README.md", 'SIZES="256M 1G 4G" SETTLE=3 CASES=raw-qcow2,qcow2-raw,chain-qcow2,zlib-raw,zstd-raw \\'):
        "the benchmark: tens of minutes and gigabytes, run by hand",
    ("README.md", 'WORKDIR=/var/tmp/bw SIZES="256M 1G 4G" SETTLE=5 \\'):
        "the convert benchmark: tens of minutes and gigabytes, run by hand",
    ("README.md", 'WORKDIR=/var/tmp/bconv SIZES="256M 1G 4G" SETTLE=3 tests/bench/bench_convert.sh build/tools/blkimg 3'):
        "the convert and commit benchmarks: tens of minutes and gigabytes, run by hand",
    ("README.md", 'SIZES="256M 1G 4G" tests/bench/bench_compare.sh build/tools/blkimg 3'):
        "the commit/compare/check benchmark: tens of minutes and gigabytes, run by hand",
    ("README.md", 'SIZES="256M 1G 4G" tests/bench/bench_info_map.sh build/tools/blkimg 10'):
        "the info/map/check and commit benchmarks: tens of minutes and gigabytes, run by hand",
    ("README.md", "libblock/            the library (installed with its headers and libblock.pc)"):
        "the source tree, not a command",
    ("man/blkimg.1", "driver=qcow2,file.filename=top.qcow2,backing.driver=qcow2,"):
        "an image-opts argument split over three lines for reading, not a command",
    ("man/blkimg.1", 'json:{"driver":"qcow2",'):
        "a filename form, not a command (EXAMPLES runs it with blkimg map)",
    ("man/blkimg.1", '{"done": 4194304, "total": 19922944, "elapsed": 0.406}'):
        "one line of --progress-fd output (README's --progress-fd transcript is compared)",
}

# Examples that cannot run as written: (file, command) -> why.
SKIP = {
    ("README.md", "blkimg convert -n --target-is-zero disk.qcow2 /dev/vg/disk  # into an existing target"):
        "needs the block device /dev/vg/disk",
    ("README.md", "blkimg convert -O qcow2 disk.raw /small-fs/disk.qcow2"):
        "needs a full file system at /small-fs",
    ("man/blkimg.1", "blkimg convert -n --progress-fd=3 disk.qcow2 /dev/vg/disk 3>progress.jsonl"):
        "needs the block device /dev/vg/disk",
}

# Examples that need much free space where they run (sparse or not): (file, command) -> bytes.
NEEDS_SPACE = {
    ("README.md", "blkimg create -f raw -o preallocation=falloc disk.raw 10G"): 10 << 30,
}

# Examples that pipe into another program, run only where it is installed: (file, command)
# -> program. Graphviz is not a dependency of blkimg or of its tests.
NEEDS_PROGRAM = {
    ("README.md", "blkimg graph --output=dot top.qcow2 | dot -Tsvg >g.svg"): "dot",
    ("man/blkimg.1", "blkimg graph --output=dot top.qcow2 | dot -Tsvg >chain.svg"): "dot",
}

# Examples that need O_DIRECT where they run (tmpfs has none).
NEEDS_O_DIRECT = {
    ("README.md", "blkimg convert -t none -T none -O qcow2 big.raw big.qcow2   # O_DIRECT: the host cache is left alone"),
}


def o_direct_works(d):
    try:
        fd = os.open(os.path.join(d, ".o_direct"), os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    os.unlink(os.path.join(d, ".o_direct"))
    return True


# Output that differs from run to run, masked on both sides before comparing.
NORMALIZE = [
    (re.compile(r'"elapsed": [0-9.]+'), '"elapsed": T'),   # --progress-fd: seconds taken
]


def troff_text(line):
    # The escapes the man page's example blocks use.
    for esc, ch in (("\\-", "-"), ("\\e", "\\"), ("\\(aq", "'"), ("\\(dq", '"'), ("\\&", "")):
        line = line.replace(esc, ch)
    return line


def readme_blocks(path):
    """Yields (line number, lines) for each code block of a markdown file."""
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fence_indent = len(line) - len(line.lstrip())
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].lstrip().startswith("```"):
                body.append(lines[i][fence_indent:])
                i += 1
            yield start + 1, body
            i += 1
            continue
        indent = len(line) - len(line.lstrip(" "))
        prev_blank = i == 0 or lines[i - 1].strip() == ""
        # An indented block: after a blank line, indented 4 more than the text it sits in
        # (list items indent their text by 2).
        if line.strip() and prev_blank and indent >= 4 and not line.lstrip().startswith(("- ", "* ", "|")):
            start, body = i, []
            while i < len(lines) and (lines[i].strip() == "" or
                                      len(lines[i]) - len(lines[i].lstrip(" ")) >= indent):
                body.append(lines[i][indent:])
                i += 1
            while body and body[-1].strip() == "":
                body.pop()
            yield start + 1, body
            continue
        i += 1


def man_blocks(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        if lines[i].strip() in (".nf", ".EX"):
            end = ".fi" if lines[i].strip() == ".nf" else ".EE"
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != end:
                body.append(troff_text(lines[i]))
                i += 1
            yield start + 1, body
        i += 1


def complete(cmd):
    """A shell command is complete when bash can parse it (quotes closed, no trailing \\)."""
    if cmd.endswith("\\"):
        return False
    return subprocess.run(["bash", "-n", "-c", cmd], stderr=subprocess.DEVNULL).returncode == 0


def parse_block(lines):
    """Returns a list of (offset, command, expected lines or None)."""
    examples = []
    transcript = any(l.startswith("$ ") for l in lines)
    i = 0
    while i < len(lines):
        line = lines[i]
        if transcript:
            if not line.startswith("$ "):
                raise ValueError(f"line {i}: output before the first `$ ` command: {line!r}")
            cmd = line[2:]
        else:
            if not line.startswith("blkimg "):
                raise ValueError(f"line {i}: not a blkimg command in a command block: {line!r}")
            cmd = line
        first = i
        while not complete(cmd):
            i += 1
            if i >= len(lines):
                raise ValueError(f"line {first}: command never ends: {cmd!r}")
            cmd += "\n" + lines[i]
        i += 1
        expected = None
        if transcript:
            expected = []
            while i < len(lines) and not lines[i].startswith("$ "):
                expected.append(lines[i])
                i += 1
        examples.append((first, cmd, expected))
    return examples


def matches(expected, actual):
    """expected lines, `...` standing for any lines, against the actual text."""
    pattern = ""
    for line in expected:
        pattern += r"(?:.*\n)*?" if line == "..." else re.escape(line) + r"\n"
    return re.fullmatch(pattern, actual) is not None


def main():
    srcdir, fixtures, workdir = sys.argv[1:4]
    docs = [("README.md", readme_blocks), ("man/blkimg.1", man_blocks)]
    failures, ran, compared, skipped = [], 0, 0, 0
    used_not_examples, used_skips = set(), set()
    block_no = 0
    for doc, reader in docs:
        for lineno, lines in reader(os.path.join(srcdir, doc)):
            if not lines:
                continue
            where = f"{doc}:{lineno}"
            is_example = lines[0].startswith(("$ ", "blkimg "))
            if not is_example:
                key = (doc, lines[0])
                if key not in NOT_EXAMPLES:
                    failures.append(f"{where}: code block is neither an example nor listed in "
                                    f"NOT_EXAMPLES: {lines[0]!r}")
                else:
                    used_not_examples.add(key)
                    print(f"skip: {where}: block {lines[0]!r}: {NOT_EXAMPLES[key]}")
                    skipped += 1
                continue
            try:
                examples = parse_block(lines)
            except ValueError as e:
                failures.append(f"{where}: {e}")
                continue
            block_no += 1
            cwd = os.path.join(workdir, f"block-{block_no}")
            os.mkdir(cwd)
            subprocess.run(["bash", fixtures], cwd=cwd, check=True)
            for offset, cmd, expected in examples:
                at = f"{doc}:{lineno + offset}"
                key = (doc, cmd)
                if key in SKIP:
                    used_skips.add(key)
                    print(f"skip: {at}: {cmd!r}: {SKIP[key]}")
                    skipped += 1
                    continue
                if key in NEEDS_SPACE:
                    used_skips.add(key)
                    st = os.statvfs(cwd)
                    fs = subprocess.run(["stat", "-f", "-c", "%T", cwd], stdout=subprocess.PIPE,
                                        text=True).stdout.strip()
                    if st.f_bavail * st.f_frsize < NEEDS_SPACE[key] * 2 or fs == "tmpfs":
                        print(f"skip: {at}: {cmd!r}: needs {NEEDS_SPACE[key] >> 30} GiB free "
                              "on a disk (not tmpfs)")
                        skipped += 1
                        continue
                if key in NEEDS_PROGRAM:
                    used_skips.add(key)
                    if shutil.which(NEEDS_PROGRAM[key]) is None:
                        print(f"skip: {at}: {cmd!r}: {NEEDS_PROGRAM[key]} is not installed")
                        skipped += 1
                        continue
                if key in NEEDS_O_DIRECT:
                    used_skips.add(key)
                    if not o_direct_works(cwd):
                        print(f"skip: {at}: {cmd!r}: the file system here has no O_DIRECT")
                        skipped += 1
                        continue
                p = subprocess.run(["bash", "-c", cmd], cwd=cwd, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace")
                ran += 1
                out = p.stdout
                if expected is None:
                    if p.returncode != 0:
                        failures.append(f"{at}: {cmd!r} exited {p.returncode}:\n{out}")
                    continue
                compared += 1
                want_rc = 1 if any(l.startswith("blkimg: ") and not l.startswith("blkimg: warning")
                                   for l in expected) else 0
                exp_lines = expected
                for rx, repl in NORMALIZE:
                    out = rx.sub(repl, out)
                    exp_lines = [rx.sub(repl, l) for l in exp_lines]
                if p.returncode != want_rc:
                    failures.append(f"{at}: {cmd!r} exited {p.returncode}, the doc implies "
                                    f"{want_rc}; it printed:\n{out}")
                elif not matches(exp_lines, out):
                    failures.append(f"{at}: {cmd!r} prints other output than the doc shows\n"
                                    "--- the doc\n" + "\n".join(expected) +
                                    "\n--- blkimg\n" + out)
            shutil.rmtree(cwd)
    for key in sorted(set(NOT_EXAMPLES) - used_not_examples):
        failures.append(f"NOT_EXAMPLES entry matches no block any more: {key}")
    for key in sorted((set(SKIP) | set(NEEDS_SPACE) | set(NEEDS_PROGRAM) | NEEDS_O_DIRECT) - used_skips):
        failures.append(f"SKIP entry matches no example any more: {key}")
    for f in failures:
        print("FAIL: " + f, file=sys.stderr)
    print(f"{ran} examples run ({compared} outputs compared), {skipped} skipped, "
          f"{len(failures)} failures")
    if ran == 0:
        failures.append("no examples found")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
