"""Every fenced shell command in README.md is exercised by a test.

`fenced_commands` extracts the commands of the README's ```bash / ```sh / ```shell /
```console blocks (continuation lines joined, comments dropped, whitespace outside
quotes collapsed; in console blocks only the `$ ` lines). `COMMANDS` says, for each
one, how it is exercised:

- `RunHere(expect, command)`: run for real, through bash, by
  tests/integration/test_readme_commands.py::test_a_readme_command_runs (from a
  temporary project folder: the repo's scripts/, search_spaces/, trainers/ and
  cluster/ linked in, the digits written there, HOME and the raysweep state folder
  temporary); `command` is what runs when it is not the README's own text (the
  CLI's --dry-run form of a command meant for a cloud account, a --help);
- `ByTest("file.py::function")`: the test that runs it or its equivalent, found by file
  name anywhere under tests/ (the tiers may move files) and by parsing that file.

A README command without an entry fails here, and so does an entry whose command
left the README. The unit tier starts no process: this file only reads files."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
TESTS = REPO / "tests"
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
MAX_README_LINES = 450


@dataclass(frozen=True)
class RunHere:
    """Run for real (tests/integration/test_readme_commands.py): exit `code`, `expect`
    in its stdout; `command` instead of the README's text when given."""

    expect: str
    command: str | None = None
    code: int = 0


@dataclass(frozen=True)
class ByTest:
    """Exercised by this test ("file.py::function" or "file.py::Class::function")."""

    where: str


# A security group id in place of aws.yaml's placeholder, as its user sets it (`up`
# refuses the placeholder; tests/unit/test_cloud_perimeter.py).
AWS_GROUP = "sg-0123456789abcdef0"

COMMANDS: dict[str, RunHere | ByTest] = {
    # The two commands.
    "scripts/quickstart.sh": ByTest("test_readme_quickstart.py::test_the_quickstart_runs_its_sweep"),
    "scripts/test.sh": ByTest("test_readme.py::test_ci_runs_the_test_command"),
    # A first sweep.
    "source .venv/bin/activate": RunHere("/bin/raysweep", command="source .venv/bin/activate && command -v raysweep"),
    "raysweep --version": RunHere("raysweep "),
    "raysweep check search_spaces/digits_mlp.yaml": RunHere(
        "search_spaces/digits_mlp.yaml: ok: trainer trainers.digits_mlp, 64 features, 1437 train rows"),
    "raysweep check search_spaces/digits_mlp.yaml --explain": RunHere("scheduler.max_epochs"),
    "raysweep train search_spaces/digits_mlp.yaml": ByTest(
        "test_train_run.py::test_rerun_with_same_name_resumes_from_the_checkpoint"),
    "raysweep train search_spaces/digits_mlp.yaml --set scheduler.max_epochs=12": ByTest(
        "test_train_run.py::test_rerun_with_same_name_resumes_from_the_checkpoint"),
    "raysweep tune search_spaces/digits_mlp.yaml --set budget.num_trials=4": ByTest(
        "test_sweep.py::test_sweep_leaves_parent_children_and_study"),
    "raysweep tune search_spaces/digits_mlp.yaml --resume": ByTest(
        "test_faults.py::test_killed_sweep_driver_resumes_without_rerunning_trials"),
    "raysweep tune search_spaces/digits_mlp.yaml --register": ByTest(
        "test_column_examples.py::test_example_sweeps_train_on_every_column_shape"),
    "raysweep tune SPEC --set data.loader=stream": ByTest("test_s3.py::test_tune_streams_from_the_bucket"),
    "raysweep train SPEC --fingerprint full": ByTest("test_readme_commands.py::test_the_first_sweeps_commands"),
    "raysweep runs": ByTest("test_readme_commands.py::test_the_first_sweeps_commands"),
    "raysweep reproduce RUN_ID": ByTest("test_record.py::test_train_record_and_reproduce_same_metrics"),
    "raysweep report SWEEP": ByTest("test_readme_commands.py::test_the_first_sweeps_commands"),
    "raysweep register RUN_ID [--name MODEL]": ByTest("test_sweep.py::test_sweep_leaves_parent_children_and_study"),
    # Data: the column-shape examples.
    "python scripts/prepare_data.py --all": RunHere("text: wrote 676 train and 170 validation rows under data/text"),
    "raysweep tune search_spaces/digits_tensor_cnn.yaml": ByTest(
        "test_column_examples.py::test_example_sweeps_train_on_every_column_shape"),
    "raysweep tune search_spaces/digits_png.yaml": ByTest(
        "test_column_examples.py::test_example_sweeps_train_on_every_column_shape"),
    "raysweep tune search_spaces/char_lm.yaml": ByTest(
        "test_column_examples.py::test_example_sweeps_train_on_every_column_shape"),
    "raysweep tune search_spaces/char_gpt.yaml": ByTest(
        "test_column_examples.py::test_the_gpt_example_trains_sharded_and_registers_a_full_model"),
    # A local multi-node cluster.
    "raysweep cluster up cluster/local.yaml": ByTest(
        "test_cluster.py::test_up_prints_address_and_how_to_submit_without_the_token"),
    "raysweep cluster status cluster/local.yaml": ByTest(
        "test_cluster.py::test_status_lists_every_node_with_its_resources"),
    "raysweep submit search_spaces/digits_mlp.yaml --cluster cluster/local.yaml": ByTest(
        "test_cluster.py::test_raysweep_submit_runs_a_sweep_as_a_job"),
    "raysweep cluster down cluster/local.yaml": ByTest(
        "test_cluster_isolation.py::test_down_removes_the_clusters_ray_folder"),
    # `ray job submit`.
    'RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=~/.raysweep/clusters/local/auth_token '
    'RAY_ADDRESS=http://127.0.0.1:8265 ray job submit --working-dir . '
    '--runtime-env-json "{\\"env_vars\\": {\\"RAYSWEEP_BASE_DIR\\": \\"$PWD\\"}}" '
    '-- python -m raysweep tune search_spaces/digits_mlp.yaml': ByTest("test_cluster.py::test_plain_ray_job_submit"),
    # Cloud GPU clusters: no cloud account here, so the CLI's dry run (the launcher
    # config it hands to `ray up` is validated by Ray: tests/unit/test_cloud_tokens.py).
    "raysweep cluster up cluster/aws.yaml": RunHere(
        "ray up -y ", command="raysweep cluster up cluster/aws.yaml --dry-run"),
    "ray dashboard cluster/aws.yaml &": RunHere(  # the installed Ray's `ray dashboard` takes a launcher config
        "Usage: ray dashboard [OPTIONS] CLUSTER_CONFIG_FILE", command="ray dashboard --help"),
    "raysweep submit search_spaces/digits_mlp.yaml --cluster cluster/aws.yaml "
    "--set data.train=s3://BUCKET/digits/train --set data.validation=s3://BUCKET/digits/validation "
    "--set storage_path=s3://BUCKET/runs": ByTest(
        "test_cloud_tokens.py::test_submit_to_a_cloud_cluster_sends_that_clusters_token"),
    "raysweep cluster down cluster/aws.yaml": RunHere(
        "ray down -y ", command="raysweep cluster down cluster/aws.yaml --dry-run"),
    # Your own machines: run for real on hosts in namespaces (a copy of onprem.yaml with
    # their addresses, as a user edits it).
    "raysweep cluster up cluster/onprem.yaml": ByTest("onprem.py::onprem_cluster"),
    "ray dashboard cluster/onprem.yaml &": ByTest("onprem.py::tunnel"),
    "MLFLOW_TRACKING_URI=http://MLFLOW_HOST:5000 raysweep submit search_spaces/digits_mlp.yaml "
    "--cluster cluster/onprem.yaml --set scaling.num_workers=2 --set data.train=s3://BUCKET/digits/train "
    "--set data.validation=s3://BUCKET/digits/validation --set storage_path=s3://BUCKET/runs": ByTest(
        "test_shared_nothing.py::test_sweep_of_two_host_trials_submitted_from_the_laptop"),
    "raysweep register SWEEP_RUN_ID": ByTest(
        "test_shared_nothing.py::test_sweep_of_two_host_trials_submitted_from_the_laptop"),
    "raysweep cluster down cluster/onprem.yaml": ByTest(
        "test_shared_nothing.py::test_cluster_down_stops_ray_on_every_host"),
}


# --------------------------------------------------------------------- extraction


def _strip_comment(line: str) -> str:
    """`line` without its shell comment: a `#` outside quotes at the start of a word."""
    single = double = escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and not single:
            escaped = True
        elif char == "'" and not double:
            single = not single
        elif char == '"' and not single:
            double = not double
        elif char == "#" and not single and not double and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _collapse(command: str) -> str:
    """Runs of whitespace outside quotes as one space (README columns line up with
    several), the ends stripped."""
    out: list[str] = []
    single = double = escaped = False
    for char in command.strip():
        if escaped:
            escaped = False
        elif char == "\\" and not single:
            escaped = True
        elif char == "'" and not double:
            single = not single
        elif char == '"' and not single:
            double = not double
        elif char.isspace() and not single and not double:
            if out and out[-1] == " ":
                continue
            char = " "
        out.append(char)
    return "".join(out)


FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_]\w*)\1")


def fenced_blocks(markdown: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of every fenced code block, in order."""
    blocks: list[tuple[str, list[str]]] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        i += 1
        if not opening:
            continue
        fence, language, body = opening.group(1), opening.group(2).lower(), []
        while i < len(lines) and not (lines[i].strip().startswith(fence[0] * len(fence))
                                      and set(lines[i].strip()) == {fence[0]}):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence (or the end: an unclosed block runs to it)
        blocks.append((language, body))
    return blocks


def block_commands(language: str, lines: list[str]) -> list[str]:
    """The commands of one shell block."""
    commands: list[str] = []
    pending: str | None = None  # a command continued on the next line
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if pending is None and language == "console":
            if not line.lstrip().startswith("$ "):
                continue  # output
            line = line.lstrip()[2:]
        text = _strip_comment(line).rstrip()
        if text.endswith("\\") and not text.endswith("\\\\"):
            pending = (pending or "") + text[:-1] + " "
            continue
        command = _collapse((pending or "") + text)
        pending = None
        heredoc = HEREDOC.search(command)
        if heredoc:  # its body, through the delimiter, belongs to the command
            body = []
            while i < len(lines) and lines[i].strip() != heredoc.group(2):
                body.append(lines[i])
                i += 1
            i += 1
            command = "\n".join([command, *body, heredoc.group(2)])
        if command:
            commands.append(command)
    if pending:
        commands.append(_collapse(pending))
    return commands


def fenced_commands(markdown: str) -> list[str]:
    """Every command of the shell-fenced blocks of a Markdown text, in order."""
    return [c for language, lines in fenced_blocks(markdown) if language in SHELL_LANGUAGES
            for c in block_commands(language, lines)]


def unmapped(markdown: str, table: dict[str, RunHere | ByTest]) -> tuple[list[str], list[str]]:
    """(commands of the text without an entry, entries whose command is not in the text)."""
    commands = fenced_commands(markdown)
    missing = [c for c in dict.fromkeys(commands) if c not in table]
    stale = [c for c in table if c not in commands]
    return missing, stale


def find_test(where: str) -> tuple[Path, list[str]]:
    """The file a "file.py::name[::name]" entry names (by file name, under tests/) and
    the names in it."""
    filename, *names = where.split("::")
    files = sorted(TESTS.rglob(filename))
    assert len(files) == 1, f"{where}: {len(files)} files named {filename} under tests/: {files}"
    return files[0], names


def defines(path: Path, names: list[str]) -> bool:
    """Whether the module at `path` defines the function `names[-1]`, inside the classes
    names[:-1] (parsed, not imported)."""
    body = ast.parse(path.read_text()).body
    for name in names[:-1]:
        classes = [n for n in body if isinstance(n, ast.ClassDef) and n.name == name]
        if not classes:
            return False
        body = classes[0].body
    return any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == names[-1] for n in body)


# --------------------------------------------------------------------------- tests


def test_every_readme_command_has_an_entry_and_every_entry_a_command() -> None:
    missing, stale = unmapped(README.read_text(), COMMANDS)
    assert not missing, ("README commands no test exercises: add each to COMMANDS in tests/unit/test_readme.py "
                         "(RunHere: run for real; ByTest: the test that runs it), as extracted:\n"
                         + "\n".join(repr(c) for c in missing))
    assert not stale, "COMMANDS entries no longer in the README (remove them):\n" + "\n".join(map(repr, stale))


@pytest.mark.parametrize("command", [c for c, how in COMMANDS.items() if isinstance(how, ByTest)])
def test_the_named_test_exists(command: str) -> None:
    how = COMMANDS[command]
    assert isinstance(how, ByTest)
    path, names = find_test(how.where)
    assert names and defines(path, names), f"{command!r}: {how.where} names no test in {path}"


def test_the_commands_run_for_real_have_their_runner() -> None:
    """The RunHere entries are executed by one parametrized integration test (the unit tier
    starts no process); it takes this table."""
    path, names = find_test("test_readme_commands.py::test_a_readme_command_runs")
    assert defines(path, names)
    assert "COMMANDS" in path.read_text() and any(isinstance(how, RunHere) for how in COMMANDS.values())


def test_ci_runs_the_test_command() -> None:
    """`scripts/test.sh` is the suite itself: CI (.ci/run) ends in it, and it runs the
    linters and every test under tests/."""
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "exec scripts/test.sh"
    script = (REPO / "scripts" / "test.sh").read_text()
    assert "ruff check" in script and "pytest" in script


def test_the_extractor_joins_continuations_drops_comments_and_reads_console_prompts() -> None:
    text = "\n".join([
        "Some prose with `inline code` that is no command.",
        "```bash",
        "# a comment line",
        "raysweep check   SPEC        # aligned, with a comment",
        "echo \"a # b\" 'c  # d'    # quotes keep their '#' and spaces",
        "FOO=1 raysweep tune SPEC \\",
        "  --set a=1 \\",
        "  --set b=2",
        "                      # a comment-only line",
        "",
        "cat > f.ini <<'INI'",
        "[x]",
        "y = 1   # in the heredoc, kept",
        "INI",
        "```",
        "```python",
        "import raysweep  # not a shell block",
        "```",
        "```console",
        "$ raysweep runs",
        "abc123  sweep  FINISHED",
        "$ raysweep report \\",
        "    SWEEP",
        "report: results/x/report.html",
        "```",
        "```sh",
        "ray status",
        "```",
    ])
    assert fenced_commands(text) == [
        "raysweep check SPEC",
        "echo \"a # b\" 'c  # d'",
        "FOO=1 raysweep tune SPEC --set a=1 --set b=2",
        "cat > f.ini <<'INI'\n[x]\ny = 1   # in the heredoc, kept\nINI",
        "raysweep runs",
        "raysweep report SWEEP",
        "ray status",
    ]


def test_a_new_readme_command_without_an_entry_or_an_entry_without_its_command_fails() -> None:
    text = README.read_text()
    assert unmapped(text, COMMANDS) == ([], [])
    fake = "raysweep tune search_spaces/digits_mlp.yaml --set budget.num_trials=999"
    added = text + f"\n```bash\n{fake}\n```\n"
    assert unmapped(added, COMMANDS) == ([fake], [])
    with pytest.raises(AssertionError, match="no test exercises"):
        _check(added)
    gone = text.replace("raysweep cluster status cluster/local.yaml", "raysweep cluster list cluster/local.yaml")
    missing, stale = unmapped(gone, COMMANDS)
    assert missing == ["raysweep cluster list cluster/local.yaml"]
    assert stale == ["raysweep cluster status cluster/local.yaml"]


def _check(markdown: str) -> None:
    missing, stale = unmapped(markdown, COMMANDS)
    assert not missing, "README commands no test exercises: " + ", ".join(missing)
    assert not stale, "entries no longer in the README: " + ", ".join(stale)


def test_a_named_test_that_does_not_exist_is_caught(tmp_path) -> None:
    path = tmp_path / "test_x.py"
    path.write_text("def test_a():\n    pass\n\nclass TestB:\n    def test_c(self):\n        pass\n")
    assert defines(path, ["test_a"]) and defines(path, ["TestB", "test_c"])
    assert not defines(path, ["test_c"]) and not defines(path, ["TestB", "test_a"]) and not defines(path, ["nope"])
    with pytest.raises(AssertionError, match="0 files named"):
        find_test("test_no_such_file.py::test_a")


def test_the_readme_is_a_guide_and_its_links_resolve() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES, "the README is a guide: details go to docs/"
    links = re.findall(r"\]\(([^)#\s]+)\)", text) + re.findall(r"`(docs/[^`\s]+)`", text)
    assert any(link.startswith("docs/") for link in links)
    broken = [link for link in links if "://" not in link and not (REPO / link).exists()]
    assert not broken, f"README links to missing files: {broken}"
    for heading in ("## The two commands", "## A first sweep", "## Writing a trainer and a spec", "## Data",
                    "## Running on a cluster", "### A local multi-node cluster", "### Your own machines",
                    "### `ray job submit`", "### Cloud GPU clusters", "## Results", "## Faults and resume",
                    "## Security", "## Speed", "## Layout"):
        assert heading in text, heading


def _speed_table(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("| entry | raysweep | baseline | ratio | target | met |")
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return table


def test_the_readme_speed_table_is_the_benchmark_docs_table() -> None:
    """The README shows the current benchmark table of docs/benchmarks.md, unchanged."""
    readme = _speed_table(README.read_text())
    assert len(readme) > 10
    assert readme == _speed_table((REPO / "docs" / "benchmarks.md").read_text())
