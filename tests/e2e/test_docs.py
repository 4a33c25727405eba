"""Every Python and TOML example in README.rst and docs/*.rst runs as written.

The examples are the ``.. code-block:: python`` and ``.. code-block:: toml`` blocks, read
with docutils, which also shows that each page renders without a warning (as GitHub and
PyPI render it) and that its relative links lead somewhere. A block's ``:name:`` is the
file name the page tells the reader to save it as.

- A TOML block must parse; a policy (``[[rule]]`` tables) must pass certsrv's policy loader.
- A Python block is saved under its name (``example.py`` without one) in a fresh directory
  holding a development PKI made by ``certsrv-pki init certs`` and the page's named TOML
  files, and run there the way its page says:

  - a block named in ``SCENARIOS`` (a server, or a client of one) by its own test here,
    which takes the server command lines from the page's ``sh`` blocks and makes real
    requests with curl;
  - a block named ``test_*.py`` is a test module: ``python -m twisted.trial`` must pass it;
  - any other block is a script: ``python FILE`` must exit 0 within a minute.

The one change made to an example: port 8443 becomes a free port, so that the tests never
meet a server a developer runs. A block given ``:class: untested`` would not be run; none is.
"""

from __future__ import annotations

import io
import shlex
import shutil
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from docutils import nodes
from docutils.core import publish_doctree
from twisted.internet import reactor, task, utils
from twisted.trial.unittest import TestCase

from certsrv.access.policy import parse_policy
from tests._servers import low_port, spawn, twistd_env, wait_listening

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.rst", *sorted((REPO / "docs").glob("*.rst"))]
PORT = "8443"
UNTESTED = "untested"
# README.rst's first command; .ci/run pins the second one.
QUICK_START = ("python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/certsrv-pki "
               "init certs && .venv/bin/twistd -n --pidfile= certsrv --listen "
               "tcp:8443:interface=127.0.0.1")
TEST_COMMAND = ("python3 -m venv .venv-test && .venv-test/bin/pip install -q tox && "
                ".venv-test/bin/tox")
# Named Python blocks and the test that runs each as its page says.
SCENARIOS = {
    "hello.py": "test_app_with_twistd",
    "klein_site.py": "test_klein_protected_site",
    "client.py": "test_http_client",
}


@dataclass(frozen=True)
class Block:
    """One code block of a page."""

    page: Path
    line: int
    language: str
    name: str | None
    classes: tuple[str, ...]
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


@dataclass(frozen=True)
class Page:
    """A page as docutils reads it."""

    path: Path
    doctree: nodes.document
    warnings: str

    @property
    def ids(self) -> set[str]:
        """The link targets (section anchors, names) the page defines."""
        return {i for node in self.doctree.findall(nodes.Element) for i in node["ids"]}

    def blocks(self) -> list[Block]:
        text = self.path.read_text()
        found = []
        offset = 0  # blocks come in page order: each one's text is after the last one's
        for node in self.doctree.findall(nodes.literal_block):
            classes = list(node["classes"])
            if "code" not in classes or len(classes) < 2:
                continue
            code = node.astext()
            first = next((line for line in code.splitlines() if line.strip()), "")
            offset = max(text.find(first, offset), offset)
            line = text[:offset].count("\n") + 1
            names = node["names"]
            found.append(Block(self.path, line, classes[1], names[0] if names else None,
                               tuple(classes[2:]), code + "\n"))
        return found

    def command(self, *words: str, exact: bool = False) -> list[str]:
        """The one command line of the page's ``sh`` blocks starting with (or being) ``words``."""
        found = []
        for block in self.blocks():
            if block.language == "sh":
                for line in block.text.splitlines():
                    argv = shlex.split(line, comments=True)
                    if (argv == list(words)) if exact else argv[:len(words)] == list(words):
                        found.append(argv)
        if len(found) != 1:
            raise AssertionError(f"{self.path.name}: {len(found)} sh lines start with {words}")
        return found[0]


@cache
def page(path: Path) -> Page:
    warnings = io.StringIO()
    doctree = publish_doctree(
        path.read_text(), source_path=str(path),
        settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": warnings,
                            "syntax_highlight": "none", "file_insertion_enabled": False,
                            "raw_enabled": False, "_disable_config": True})
    return Page(path, doctree, warnings.getvalue())


def all_blocks(language: str) -> list[Block]:
    return [b for p in PAGES for b in page(p).blocks() if b.language == language]


def named_block(name: str) -> Block:
    found = [b for b in all_blocks("python") + all_blocks("toml") if b.name == name]
    if len(found) != 1:
        raise AssertionError(f"{len(found)} code blocks are named {name!r}")
    return found[0]


def _executable(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed")
    return found


def twistd(argv: list[str]) -> list[str]:
    """A ``twistd ...`` command line of a page, run with this Python."""
    assert argv[0] == "twistd", argv
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *argv[1:]]


def on_port(argv: list[str], port: int) -> list[str]:
    if not any(PORT in word for word in argv):
        raise AssertionError(f"{argv} names no port {PORT}")
    return [word.replace(PORT, str(port)) for word in argv]


async def run(argv: list[str], cwd: Path) -> tuple[str, str, int]:
    out, err, code = await utils.getProcessOutputAndValue(
        argv[0], argv[1:], env=twistd_env(), path=str(cwd), reactor=reactor)
    return out.decode(), err.decode(), code


class Workdir:
    """A directory with a development PKI in ``certs/``, as the pages assume."""

    def __init__(self, case: TestCase) -> None:
        self.case = case
        self.path = Path(case.mktemp())
        self.path.mkdir(parents=True)

    async def pki(self, *argv: str) -> str:
        out, err, code = await run([_executable("certsrv-pki"), *argv], self.path)
        self.case.assertEqual(code, 0, f"certsrv-pki {' '.join(argv)}: {out}{err}")
        return out

    async def init(self, *toml_pages: Path) -> Workdir:
        await self.pki("init", "certs")
        for path in toml_pages:
            for block in page(path).blocks():
                if block.language == "toml" and block.name is not None:
                    (self.path / block.name).write_text(block.text)
        return self

    def save(self, block: Block, port: int | None = None) -> Path:
        assert block.name is not None
        text = block.text if port is None else block.text.replace(PORT, str(port))
        if port is not None:
            self.case.assertNotEqual(text, block.text, f"{block.where}: no port {PORT}")
        target = self.path / block.name
        target.write_text(text)
        return target

    async def serve(self, argv: list[str], port: int) -> None:
        _, child = spawn(self.case, argv, cwd=str(self.path))
        await wait_listening(port, child)

    async def curl(self, port: int, path: str, cert: str | None = "client") -> tuple[int, str]:
        """GET ``path`` with the development PKI's certificate ``cert`` (None: without one)."""
        argv = ["curl", "-sS", "--max-time", "20", "--cacert", "certs/ca.pem",
                "-w", "\n%{http_code}"]
        if cert is not None:
            stem = "certs/client" if cert == "client" else f"certs/clients/{cert}"
            argv += ["--cert", f"{stem}.pem", "--key", f"{stem}.key"]
        out, err, _ = await run([shutil.which("curl") or "curl", *argv[1:],
                                 f"https://localhost:{port}{path}"], self.path)
        body, _, status = out.rpartition("\n")
        return int(status or 0), body + err


class PagesTests(TestCase):
    """The pages themselves: they render, their links resolve, the quick start is intact."""

    def test_pages(self) -> None:
        """README.rst and the docs pages the brief names are all there."""
        names = {p.name for p in PAGES}
        for wanted in ("README.rst", "checks.rst", "revocation.rst", "policy.rst", "apps.rst",
                       "proxies.rst", "operations.rst", "client.rst", "pki.rst",
                       "benchmark.rst"):
            self.assertIn(wanted, names)

    def test_render_without_warnings(self) -> None:
        """docutils reads every page without a warning or an error."""
        for path in PAGES:
            self.assertEqual(page(path).warnings, "", path.name)

    def test_links(self) -> None:
        """Every relative link names a file that exists, and an anchor the page has."""
        for path in PAGES:
            for reference in page(path).doctree.findall(nodes.reference):
                uri = reference.get("refuri")
                if not uri or "://" in uri or uri.startswith("mailto:"):
                    continue
                target, _, anchor = uri.partition("#")
                linked = (path.parent / target).resolve() if target else path
                self.assertTrue(linked.exists(), f"{path.name}: link to {uri}")
                if anchor:
                    self.assertIn(anchor, page(linked).ids, f"{path.name}: link to {uri}")

    def test_readme_links_every_page(self) -> None:
        """The README leads to each docs page."""
        readme = (REPO / "README.rst").read_text()
        for path in PAGES[1:]:
            self.assertIn(f"<docs/{path.name}>`_", readme, f"README.rst: no link to {path.name}")

    def test_quick_start(self) -> None:
        """The README opens with the two commands, as they are (.ci/run greps the second)."""
        lines = (REPO / "README.rst").read_text().splitlines()
        commands = [line for line in lines if line.startswith("    python3 -m venv")]
        self.assertEqual(commands[:2], [f"    {QUICK_START}", f"    {TEST_COMMAND}"])
        self.assertLess(lines.index(f"    {TEST_COMMAND}"), 20)

    def test_every_block_is_checked(self) -> None:
        """Every Python and TOML block is run or parsed; none is marked untested."""
        python, toml = all_blocks("python"), all_blocks("toml")
        self.assertTrue(python and toml)
        for block in python + toml:
            self.assertNotIn(UNTESTED, block.classes, block.where)
        for name, test in SCENARIOS.items():
            named_block(name)
            self.assertTrue(hasattr(ExampleTests, test), test)


class TOMLTests(TestCase):
    """TOML examples parse; policies pass certsrv's policy loader."""

    def test_toml_blocks(self) -> None:
        for block in all_blocks("toml"):
            if UNTESTED in block.classes:
                continue
            document = tomllib.loads(block.text)
            if "rule" in document:
                # Padded so that an error names the line of the page.
                padded = "\n" * (block.line - 1) + block.text
                policy = parse_policy(padded, source=str(block.page.relative_to(REPO)))
                self.assertEqual(len(policy.rules), len(document["rule"]), block.where)

    def test_policy_example_file(self) -> None:
        """docs/policy-example.toml, which docs/policy.rst and --help point to, is a policy."""
        path = REPO / "docs" / "policy-example.toml"
        policy = parse_policy(path.read_text(), source=str(path))
        self.assertEqual([r.name for r in policy.rules],
                         ["health", "admin", "payments", "api", "secure"])


class ExampleTests(TestCase):
    """The Python examples, run as their pages say, with real requests made to them."""

    async def test_other_blocks(self) -> None:
        """Blocks without a scenario: test modules pass under trial, scripts exit 0."""
        for block in all_blocks("python"):
            if block.name in SCENARIOS or UNTESTED in block.classes:
                continue
            work = await Workdir(self).init(block.page)
            name = block.name or "example.py"
            (work.path / name).write_text(block.text)
            if name.startswith("test_") and name.endswith(".py"):
                argv = [sys.executable, "-m", "twisted.trial", name[:-3]]
            else:
                argv = [sys.executable, name]
            _, child = spawn(self, argv, cwd=str(work.path))
            for _ in range(600):
                if child.ended.called:
                    break
                await task.deferLater(reactor, 0.1, lambda: None)
            else:
                self.fail(f"{block.where}: {' '.join(argv[1:])} still runs after a minute; "
                          "if it is a server, give it a scenario in tests/e2e/test_docs.py")
            self.assertEqual(await child.ended, 0, f"{block.where}: {child.text}")

    async def test_app_with_twistd(self) -> None:
        """hello.py under ``twistd certsrv --app``: alone, then with public.toml."""
        apps = REPO / "docs" / "apps.rst"
        work = await Workdir(self).init(apps)
        work.save(named_block("hello.py"))
        strict = page(apps).command("twistd", "-n", "--pidfile=", "certsrv", "--listen",
                                    "tcp:8443:interface=127.0.0.1", "--app", "hello.root",
                                    "--app-path", ".", exact=True)
        port = low_port()
        await work.serve(twistd(on_port(strict, port)), port)
        self.assertEqual(await work.curl(port, "/hello"), (200, "hello client\n"))
        self.assertEqual(await work.curl(port, "/account"), (200, "hello client\n"))
        status, body = await work.curl(port, "/hello", cert=None)
        self.assertEqual(status, 0)  # no certificate: the handshake is refused
        self.assertIn("certificate required", body)

        public = page(apps).command("twistd", "-n", "--pidfile=", "certsrv", "--listen",
                                    "tcp:8443:interface=127.0.0.1", "--app", "hello.root",
                                    "--app-path", ".", "--client-cert", "optional")
        self.assertEqual(public[-2:], ["--policy", "public.toml"])
        port = low_port()
        await work.serve(twistd(on_port(public, port)), port)
        self.assertEqual(await work.curl(port, "/hello", cert=None), (200, "hello stranger\n"))
        self.assertEqual(await work.curl(port, "/hello"), (200, "hello client\n"))
        status, body = await work.curl(port, "/account", cert=None)
        self.assertEqual(status, 403)
        self.assertIn("no_certificate", body)
        self.assertEqual(await work.curl(port, "/account"), (200, "hello client\n"))

    async def test_klein_protected_site(self) -> None:
        """klein_site.py, run with python beside its p.toml, admits client and no one else."""
        apps = REPO / "docs" / "apps.rst"
        work = await Workdir(self).init(apps)
        self.assertTrue((work.path / "p.toml").exists())
        await work.pki("issue-client", "mallory")
        port = low_port()
        script = work.save(named_block("klein_site.py"), port)
        page(apps).command("python", "klein_site.py", exact=True)
        await work.serve([sys.executable, script.name], port)
        self.assertEqual(await work.curl(port, "/hello"), (200, "hello client\n"))
        status, body = await work.curl(port, "/hello", cert="mallory")
        self.assertEqual(status, 403)
        self.assertIn("not_allowed", body)
        status, body = await work.curl(port, "/other")
        self.assertEqual(status, 403)
        self.assertIn("no_rule", body)

    async def test_http_client(self) -> None:
        """client.py against the quick start's server, then against one that refuses it."""
        work = await Workdir(self).init()
        port = low_port()
        script = work.save(named_block("client.py"), port)
        server = shlex.split(QUICK_START.rpartition("&& .venv/bin/")[2])
        await work.serve(twistd(on_port(server, port)), port)
        out, err, code = await run([sys.executable, script.name], work.path)
        self.assertEqual((code, out), (0, "200 Client certificate accepted\nsubject: CN=client\n"),
                         err)

        await work.pki("init", "other")  # a CA the next server trusts instead
        port = low_port()
        script = work.save(named_block("client.py"), port)
        await work.serve(twistd(on_port([*server, "--ca", "other/ca.pem"], port)), port)
        out, err, code = await run([sys.executable, script.name], work.path)
        self.assertEqual(code, 2, out + err)
        self.assertIn("refused (unknown_ca): the server rejected the client certificate", err)

