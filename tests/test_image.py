"""The production image without a Docker engine (CI's machines have none and cannot pull base images).

`TestEntryPoint` replays the Dockerfile: each stage's COPY lines bring exactly their sources from the build
context (as .dockerignore filters it) into a folder per stage; the build stage's RUN lines are replayed from
their commands (a venv, the pip installs of the lock files, the package's wheel built from what was copied);
the serve stage gets what it copies `--from` the build stage; and the image's ENTRYPOINT and CMD run with the
image's ENV from its WORKDIR. The venv holds only the distributions pinned in requirements/serve.lock (linked
file by file from this venv), never this checkout. So a file the image needs but does not copy, a package-data
pattern that misses a file, a .dockerignore that drops one, or a serving import of a package the lock leaves
out fails here; `TestTheReplayCanFail` shows each of those failing.

The rest checks what the image and compose.yaml promise: the serving lock without training packages and
current with pyproject.toml, no secret baked in, non-root, a HEALTHCHECK, the settings in .env.example, the
README and compose.yaml being real ones.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.metadata
import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from sqlalchemy import create_engine, text

from service.config import Settings
from tests.api_fixtures import PG_URL, free_port, postgres_available, wait_ready

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# What the serving image must leave out: the train extra (pandas, scikit-learn, shap, matplotlib, optuna, Dask...).
TRAINING_ONLY = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["train"]}
SECRETS = ("SMECREDIT_PSEUDONYM_KEY", "SMECREDIT_DATA_KEYS", "SMECREDIT_METRICS_TOKEN")
REGENERATE = "regenerate the lock files as docs/deploy.md says"


# --- the Dockerfile, parsed ------------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    lines: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)


def instructions(text: str) -> list[tuple[str, str]]:
    """Logical instructions: continuation lines joined, comments dropped."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        cmd, _, rest = (buf + line).partition(" ")
        out.append((cmd.upper(), rest.strip()))
        buf = ""
    return out


def parse_stages(text: str) -> dict[str, Stage]:
    """Stages by name, in order (the last one is what `docker build` builds by default)."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for cmd, rest in instructions(text):
        if cmd == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            current = stages[name] = Stage(name, expand(parts[0], args))
        elif current is None:
            if cmd == "ARG":
                key, _, value = rest.partition("=")
                args[key] = value
        else:
            current.lines.append((cmd, rest))
    return stages


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), value)


def env_pairs(rest: str, env: dict[str, str]) -> dict[str, str]:
    return {k: expand(v, env) for k, _, v in (token.partition("=") for token in shlex.split(rest))}


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, base first."""
    stage = stages[name]
    return (chain(stages, stage.base) if stage.base in stages else []) + [stage]


def image_env(stages: dict[str, Stage], name: str) -> dict[str, str]:
    env: dict[str, str] = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    for stage in chain(stages, name):
        for cmd, rest in stage.lines:
            if cmd == "ENV":
                env.update(env_pairs(rest, env))
    return env


def last(stages: dict[str, Stage], name: str, instruction: str) -> str | None:
    """An instruction's arguments as a stage has it, inherited from the stages it is built FROM."""
    found = [rest for stage in chain(stages, name) for cmd, rest in stage.lines if cmd == instruction]
    return found[-1] if found else None


def exec_form(stages: dict[str, Stage], name: str, instruction: str) -> list[str]:
    found = last(stages, name, instruction)
    assert found, f"the {name} stage has no {instruction}"
    if instruction == "HEALTHCHECK":
        found = found.partition("CMD ")[2]
    value = json.loads(found)
    assert isinstance(value, list), f"{instruction} must be in exec form (a JSON list): signals reach the server"
    return value


def copy_args(rest: str) -> tuple[dict[str, str], list[str], str]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key] = value
        rest = rest.strip()
    paths = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    return flags, paths[:-1], paths[-1]


# --- .dockerignore, as Docker reads it (last matching pattern wins; a pattern matching a parent matches) --------


def ignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        rx, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        patterns.append((negated, re.compile(rx)))
    return patterns


def ignored(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negated, rx in patterns:
        if any(rx.fullmatch(p) for p in prefixes):
            result = not negated
    return result


# --- the lock files -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    name: str  # canonical
    version: str
    requirement: Requirement
    hashes: int

    def applies(self) -> bool:
        return self.requirement.marker is None or self.requirement.marker.evaluate()


def read_lock(path: Path) -> list[Pin]:
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    pins = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", line))
        req = Requirement(re.sub(r"\s*--hash=\S+", "", line).strip())
        (spec,) = req.specifier
        pins.append(Pin(canonicalize_name(req.name), spec.version, req, hashes))
    return pins


# --- the replay -----------------------------------------------------------------------------------------------


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)  # noqa: S603


class Replay:
    """Each stage of the Dockerfile as a folder (its root file system), built from what the Dockerfile copies."""

    def __init__(self, workdir: Path, dockerfile: str, dockerignore: str, context: Path = ROOT) -> None:
        self.workdir, self.context = workdir, context
        self.stages = parse_stages(dockerfile)
        self.patterns = ignore_patterns(dockerignore)
        self.roots: dict[str, Path] = {}

    def root(self, name: str) -> Path:
        if name not in self.roots:
            self.roots[name] = self._build(self.stages[name])
        return self.roots[name]

    def _build(self, stage: Stage) -> Path:
        root = self.workdir / stage.name
        if stage.base in self.stages:
            shutil.copytree(self.root(stage.base), root, symlinks=True)
        else:
            root.mkdir(parents=True)
        inherited = stage.base in self.stages
        env = image_env(self.stages, stage.base) if inherited else {}
        wd = (last(self.stages, stage.base, "WORKDIR") if inherited else None) or "/"
        for cmd, rest in stage.lines:
            if cmd == "ENV":
                env.update(env_pairs(rest, env))
            elif cmd == "WORKDIR":
                wd = posixpath.join(wd, expand(rest, env))
                self.at(root, wd).mkdir(parents=True, exist_ok=True)
            elif cmd in ("COPY", "ADD"):
                self._copy(root, wd, rest)
            elif cmd == "RUN":
                for command in expand(rest, env).split("&&"):
                    self._run(root, wd, shlex.split(command))
        return root

    @staticmethod
    def at(root: Path, image_path: str) -> Path:
        return root / image_path.lstrip("/")

    def _copy(self, root: Path, wd: str, rest: str) -> None:
        flags, sources, dest = copy_args(rest)
        dest_path = posixpath.join(wd, dest)
        into_dir = dest.endswith("/") or len(sources) > 1
        for source in sources:
            if "from" in flags:
                src = self.at(self.root(flags["from"]), source)
                target = self.at(root, dest_path)
                if src.is_dir():
                    shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target / src.name if into_dir else target, follow_symlinks=False)
                continue
            src = self.context / source
            if ignored(source.strip("/"), self.patterns) and not src.is_dir():
                raise FileNotFoundError(f"COPY {source}: excluded from the build context by .dockerignore")
            if not src.exists():
                raise FileNotFoundError(f"COPY {source}: not in the build context")
            if src.is_dir():
                for path in sorted(src.rglob("*")):
                    relative = path.relative_to(self.context).as_posix()
                    if path.is_file() and not ignored(relative, self.patterns):
                        target = self.at(root, dest_path) / path.relative_to(src)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, target)
            else:
                target = self.at(root, dest_path) / src.name if into_dir else self.at(root, dest_path)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)

    def _run(self, root: Path, wd: str, argv: list[str]) -> None:
        """The build steps the Dockerfile uses. The build tools' venv (`pip` without `--python`) is this venv;
        every venv that pip installs into with `--python` is a real one, under the stage's root."""
        if not argv:
            return
        if argv[:3] == ["python", "-m", "venv"]:
            target = argv[-1]
            if "--without-pip" in argv:  # the venv that ships; the other is the build tools' (this venv)
                run([sys.executable, "-m", "venv", "--without-pip", str(self.at(root, target))], check=True)
            return
        if argv[:2] == ["rm", "-rf"]:
            for path in argv[2:]:
                shutil.rmtree(self.at(root, path), ignore_errors=True)
            return
        if not argv[0].endswith("/pip"):
            return  # apt-get, groupadd, mkdir, chown: nothing the entry point reads
        python = argv[argv.index("--python") + 1] if "--python" in argv else None
        if "wheel" in argv:
            out = self.at(root, argv[argv.index("--wheel-dir") + 1])
            source = self.at(root, posixpath.join(wd, argv[-1]))
            done = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(out), str(source)])
            assert done.returncode == 0, f"building the wheel from the copied files failed:\n{done.stderr[-3000:]}"
            return
        if "install" not in argv or python is None:
            return  # the build tools (requirements/build.lock): this venv stands in for them
        venv = self.at(root, posixpath.dirname(posixpath.dirname(python)))
        locks = [self.at(root, posixpath.join(wd, argv[i + 1])) for i, a in enumerate(argv) if a == "-r"]
        for lock in locks:
            link_distributions(read_lock(lock), venv)
        wheels = [w for a in argv if a.endswith(".whl") for w in sorted(root.glob(a.lstrip("/")))]
        if wheels:
            done = run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                        "--no-deps", "--no-index", "--force-reinstall", *map(str, wheels)])
            assert done.returncode == 0, f"installing the wheel failed:\n{done.stderr[-3000:]}"


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def link_distributions(pins: list[Pin], venv: Path) -> None:
    """Each pinned distribution's installed files, linked one by one from this venv: the venv sees those
    distributions and nothing else (not this checkout, not a package the lock leaves out)."""
    target = site_packages(venv)
    for pin in pins:
        if not pin.applies():
            continue
        try:
            dist = importlib.metadata.distribution(pin.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{pin.name} (pinned in the lock) is not installed in this venv: make install")
        base = Path(str(dist.locate_file("")))
        for file in dist.files or ():
            if file.parts[0] == "..":  # console scripts: the image's entry point is this package's only
                continue
            link = target / file
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(base / file)


@dataclass
class Image:
    """The serve stage, replayed: its root, its working directory, its environment and its entry point."""

    replay: Replay
    target: str

    @property
    def root(self) -> Path:
        return self.replay.root(self.target)

    @property
    def cwd(self) -> Path:
        return Replay.at(self.root, last(self.replay.stages, self.target, "WORKDIR") or "/")

    def env(self, **settings: str) -> dict[str, str]:
        env = image_env(self.replay.stages, self.target)
        path = [str(Replay.at(self.root, p)) for p in env["PATH"].split(":") if Replay.at(self.root, p).is_dir()]
        return {**env, "PATH": ":".join(path + [os.environ.get("PATH", "")]), "HOME": str(self.root),
                "LANG": "C.UTF-8", **settings}

    def command(self, argv: list[str]) -> list[str]:
        """An argv as the image runs it: the program found on the image's PATH; a script is run by the venv's
        interpreter (its first line names the build stage's venv, as in the image: /opt/venv either way)."""
        env = self.env()
        for entry in env["PATH"].split(":"):
            program = Path(entry) / argv[0]
            if program.is_file() and str(program).startswith(str(self.root)):
                first = program.read_bytes()[:2]
                return ([str(program.parent / "python"), str(program)] if first == b"#!" else [str(program)]) \
                    + argv[1:]
        raise FileNotFoundError(f"{argv[0]} is not on the image's PATH")

    def entry(self, *args: str) -> list[str]:
        return self.command(exec_form(self.replay.stages, self.target, "ENTRYPOINT") + list(args))


def replayed(tmp: Path, dockerfile: str | None = None, dockerignore: str | None = None,
             context: Path = ROOT) -> Image:
    dockerfile = dockerfile if dockerfile is not None else (ROOT / "Dockerfile").read_text(encoding="utf-8")
    dockerignore = dockerignore if dockerignore is not None else (ROOT / ".dockerignore").read_text(encoding="utf-8")
    replay = Replay(tmp, dockerfile, dockerignore, context)
    return Image(replay, list(replay.stages)[-1])


def served_command(image: Image, port: int) -> list[str]:
    """The image's ENTRYPOINT + CMD, bound to loopback on a free port instead of 0.0.0.0:8000."""
    cmd = exec_form(image.replay.stages, image.target, "CMD")
    cmd = [("127.0.0.1" if prev == "--host" else str(port) if prev == "--port" else a)
           for prev, a in zip(["", *cmd[:-1]], cmd, strict=True)]
    return image.entry(*cmd)


@contextlib.contextmanager
def serving(image: Image, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(served_command(image, port), cwd=image.cwd, env=env,  # noqa: S603
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(base, proc, seconds=90)
        except RuntimeError as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{exc}; its output:\n{proc.communicate(timeout=30)[0][-4000:]}") from None
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def demo(image: Image, env: dict[str, str]) -> tuple[str, Path]:
    """`smecredit demo` in the image: the key it prints and the example request it points to (from WORKDIR)."""
    done = run(image.entry("demo"), cwd=image.cwd, env=env)
    assert done.returncode == 0, f"`smecredit demo` failed in the image:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    key = re.search(r"export SMECREDIT_KEY=(\S+)", done.stdout)
    request = re.search(r"-d @(\S+)", done.stdout)
    assert key and request, done.stdout
    return key.group(1), image.cwd / request.group(1)


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return replayed(tmp_path_factory.mktemp("image"))


def production_secrets() -> dict[str, str]:
    """What docs/deploy.md tells an operator to generate."""
    return {"SMECREDIT_PSEUDONYM_KEY": base64.b64encode(os.urandom(32)).decode(),
            "SMECREDIT_DATA_KEYS": "k1:" + base64.b64encode(os.urandom(32)).decode(),
            "SMECREDIT_METRICS_TOKEN": os.urandom(16).hex(),
            "SMECREDIT_PUBLIC_BASE_URL": "https://credit.example.com"}


@pytest.fixture(params=["sqlite", "postgresql"])
def settings_for(request: pytest.FixtureRequest, tmp_path: Path, champion_registry: Path) -> Iterator[dict]:
    """The settings a deployment gives the image: PostgreSQL in production mode, as the image is meant to run;
    SQLite in local mode (production refuses SQLite) so the replay runs without a PostgreSQL server too."""
    registry = {"SMECREDIT_REGISTRY": str(champion_registry)}  # the volume mounted at /models
    if request.param == "sqlite":
        yield {**registry, "SMECREDIT_ENVIRONMENT": "local", "SMECREDIT_DATABASE_URL": f"sqlite:///{tmp_path}/s.db"}
        return
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    schema = f"image_{os.urandom(6).hex()}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield {**registry, **production_secrets(),
               "SMECREDIT_DATABASE_URL": f"{PG_URL}?options=-csearch_path%3D{schema}"}
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# --- tests ------------------------------------------------------------------------------------------------------


class TestEntryPoint:
    def test_the_image_serves_from_the_files_it_copies(self, image: Image, settings_for: dict) -> None:
        env = image.env(**settings_for)
        key, request = demo(image, env)
        assert request.is_file(), f"`smecredit demo` points to {request.relative_to(image.cwd)}, not in the image"
        with serving(image, env) as base:
            body = json.loads(request.read_text(encoding="utf-8"))
            scored = httpx.post(f"{base}/v1/scores", json=body, headers={"Authorization": f"Bearer {key}"},
                                timeout=30)
            assert scored.status_code == 200, scored.text
            assert scored.json()["decision"] in ("approve", "refer", "decline")
            health = exec_form(image.replay.stages, image.target, "HEALTHCHECK")
            probe = run(image.command([a.replace("127.0.0.1:8000", base.removeprefix("http://")) for a in health]),
                        env=env, cwd=image.cwd)
            assert probe.returncode == 0, f"the HEALTHCHECK command fails on a serving container: {probe.stderr}"

    def test_without_secrets_the_image_refuses_to_start_and_says_which(self, image: Image, tmp_path: Path) -> None:
        done = run(served_command(image, free_port()), cwd=image.cwd, env=image.env(SMECREDIT_REGISTRY=str(tmp_path)))
        out = done.stdout + done.stderr
        assert done.returncode != 0 and "unsafe production settings" in out, out[-2000:]
        for needed in ("DATABASE_URL", *SECRETS, "SMECREDIT_PUBLIC_BASE_URL"):
            assert needed in out, needed
        assert "SMECREDIT_DOCS_ENABLED" not in out  # the image turns the docs off itself
        assert "Traceback" not in out

    def test_the_serving_venv_holds_the_lock_and_this_package_only(self, image: Image) -> None:
        site = site_packages(Replay.at(image.root, "/opt/venv"))
        names = {canonicalize_name(p.name.split("-")[0]) for p in site.glob("*.dist-info")}
        pinned = {p.name for p in read_lock(ROOT / "requirements" / "serve.lock") if p.applies()}
        assert names == pinned | {"smecredit"}
        assert not (site / "training").exists() and not (site / "tests").exists()
        assert not TRAINING_ONLY & names


    def test_every_serving_module_imports_in_the_image(self, image: Image) -> None:
        """Whatever a serving command may import: only the notebook API and the exports may need more."""
        probe = ("import importlib, pkgutil, service\n"
                 "for m in pkgutil.walk_packages(service.__path__, 'service.'):\n"
                 "    if '.migrations.' in m.name: continue\n"
                 "    try: importlib.import_module(m.name)\n"
                 "    except ModuleNotFoundError as exc: print(m.name, exc.name)\n")
        done = run(image.command(["python", "-c", probe]), cwd=image.cwd, env=image.env())
        assert done.returncode == 0, done.stderr[-3000:]
        missing = dict(line.split() for line in done.stdout.splitlines())
        optional = {m: n for m, n in missing.items()
                    if m.startswith("service.export.") or m in ("service.notebook", "service.frames")}
        assert missing == optional, f"serving modules that import what the image leaves out: {missing}"
        assert "service.scoring.engine" not in missing and "service.main" not in missing


    @pytest.mark.slow
    def test_the_train_target_makes_data_and_a_champion(self, image: Image, tmp_path: Path) -> None:
        """The compose walkthrough's first two steps, in the train target: synth, then train --promote."""
        train = Image(image.replay, "train")
        for package, in_serve in (("dask", False), ("training", False), ("service", True)):
            assert (site_packages(Replay.at(train.root, "/opt/venv")) / package).is_dir(), package
            assert (site_packages(Replay.at(image.root, "/opt/venv")) / package).is_dir() == in_serve, package
        env = train.env(SMECREDIT_ENVIRONMENT="local", SMECREDIT_REGISTRY=str(tmp_path / "registry"),
                        SMECREDIT_DATABASE_URL=f"sqlite:///{tmp_path}/s.db")
        data = tmp_path / "synth"
        for args in (("synth", "--entities", "3000", "--months", "36", "--seed", "7", "--out", str(data)),
                     ("train", "--data", str(data), "--promote")):
            done = run(train.entry(*args), cwd=train.cwd, env=env)
            assert done.returncode == 0, f"smecredit {args[0]} in the train target:\n{done.stderr[-3000:]}"
        assert (tmp_path / "registry" / "champion.json").is_file()


class TestTheReplayCanFail:
    """The replay catches what the image would miss: each case breaks one thing and sees the entry point fail."""

    def test_examples_not_copied(self, tmp_path: Path) -> None:
        dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
        broken = re.sub(r"(?m)^COPY openapi/examples .*$", "", dockerfile)
        assert broken != dockerfile
        image = replayed(tmp_path, dockerfile=broken)
        _, request = demo(image, image.env(SMECREDIT_ENVIRONMENT="local",
                                           SMECREDIT_DATABASE_URL=f"sqlite:///{tmp_path}/s.db"))
        assert not request.is_file()

    def test_migrations_left_out_by_dockerignore(self, tmp_path: Path) -> None:
        dockerignore = (ROOT / ".dockerignore").read_text(encoding="utf-8") + "\nservice/db/migrations/versions\n"
        image = replayed(tmp_path, dockerignore=dockerignore)
        with pytest.raises(AssertionError, match="demo` failed"):
            demo(image, image.env(SMECREDIT_ENVIRONMENT="local", SMECREDIT_DATABASE_URL=f"sqlite:///{tmp_path}/s.db"))

    def test_a_serving_dependency_missing_from_the_lock(self, tmp_path: Path) -> None:
        context = tmp_path / "context"
        shutil.copytree(ROOT, context, ignore=shutil.ignore_patterns(".venv", ".git", "data", "models", "*cache*"))
        lock = context / "requirements" / "serve.lock"
        lock.write_text(re.sub(r"(?ms)^sqlalchemy==.*?(?=^\S)", "", lock.read_text(encoding="utf-8")),
                        encoding="utf-8")
        image = replayed(tmp_path / "image", context=context)
        with pytest.raises(AssertionError, match="sqlalchemy"):
            demo(image, image.env(SMECREDIT_ENVIRONMENT="local", SMECREDIT_DATABASE_URL=f"sqlite:///{tmp_path}/s.db"))


class TestDockerfile:
    stages = parse_stages((ROOT / "Dockerfile").read_text(encoding="utf-8"))

    def test_serve_is_the_default_target_and_train_a_second_one(self) -> None:
        assert list(self.stages)[-1] == "serve" and "train" in self.stages
        copied = [copy_args(rest)[1] for s in chain(self.stages, "build") for cmd, rest in s.lines if cmd == "COPY"]
        assert not any("training" in src for sources in copied for src in sources), "training/ in the serve build"

    def test_runs_as_a_numeric_non_root_user(self) -> None:
        for target in ("serve", "train"):
            users = [rest for s in chain(self.stages, target) for cmd, rest in s.lines if cmd == "USER"]
            assert users, target
            uid = users[-1].split(":")[0]
            assert uid.isdigit() and int(uid) != 0, users[-1]

    def test_production_mode_and_no_secret_baked_in(self) -> None:
        env = image_env(self.stages, "serve")
        assert env["SMECREDIT_ENVIRONMENT"] == "production"
        for cmd, rest in instructions((ROOT / "Dockerfile").read_text(encoding="utf-8")):
            if cmd in ("ENV", "ARG", "LABEL"):
                for name in (*SECRETS, "SMECREDIT_DATABASE_URL", "DATABASE_URL"):
                    assert name not in rest, f"{cmd} {rest}"

    def test_a_healthcheck_on_the_served_port(self) -> None:
        (health,) = [rest for cmd, rest in self.stages["serve"].lines if cmd == "HEALTHCHECK"]
        cmd = exec_form(self.stages, "serve", "CMD")
        port = cmd[cmd.index("--port") + 1]
        assert f"127.0.0.1:{port}/healthz" in health and "--timeout=" in health


class TestLocks:
    pyproject = PYPROJECT

    @pytest.mark.parametrize(("lock", "groups"), [
        ("serve.lock", ("dependencies", "tracing")),
        ("train.lock", ("dependencies", "tracing", "train", "export")),
        ("build.lock", ("build-system",)),
    ])
    def test_every_declared_dependency_is_pinned_with_hashes(self, lock: str, groups: tuple[str, ...]) -> None:
        pins = {p.name: p for p in read_lock(ROOT / "requirements" / lock)}
        declared = []
        for group in groups:
            if group == "dependencies":
                declared += self.pyproject["project"]["dependencies"]
            elif group == "build-system":
                declared += self.pyproject["build-system"]["requires"]
            else:
                declared += self.pyproject["project"]["optional-dependencies"][group]
        for spec in declared:
            req = Requirement(spec)
            pin = pins.get(canonicalize_name(req.name))
            assert pin, f"{req.name} is declared in pyproject.toml but not pinned in {lock}: {REGENERATE}"
            assert req.specifier.contains(pin.version, prereleases=True), \
                f"{lock} pins {pin.name}=={pin.version}, outside {req}: {REGENERATE}"
        assert all(p.hashes for p in pins.values()), [p.name for p in pins.values() if not p.hashes]

    def test_serving_lock_leaves_training_packages_out(self) -> None:
        pinned = {p.name for p in read_lock(ROOT / "requirements" / "serve.lock")}
        assert not pinned & TRAINING_ONLY, f"training-only packages in the serving image: {pinned & TRAINING_ONLY}"
        train = {p.name: p.version for p in read_lock(ROOT / "requirements" / "train.lock")}
        for pin in read_lock(ROOT / "requirements" / "serve.lock"):
            assert train.get(pin.name) == pin.version, f"train.lock and serve.lock disagree on {pin.name}: {REGENERATE}"


class TestDockerignore:
    patterns = ignore_patterns((ROOT / ".dockerignore").read_text(encoding="utf-8"))

    @pytest.mark.parametrize("path", [
        ".venv/bin/python", ".git/HEAD", "data/synth/profile.parquet", "data/smecredit.db", "models/champion.json",
        "models/20250101-abc/model.txt", ".env", "service/__pycache__/main.cpython-311.pyc", ".pytest_cache/v/x",
        ".ruff_cache/x", ".hypothesis/x", "smecredit.egg-info/PKG-INFO", "tests/test_api.py", "requirements/build.in",
    ])
    def test_kept_out_of_the_build_context(self, path: str) -> None:
        assert ignored(path, self.patterns)

    def test_every_tracked_file_the_dockerfile_copies_is_in_the_context(self) -> None:
        stages = parse_stages((ROOT / "Dockerfile").read_text(encoding="utf-8"))
        sources = {src for s in stages.values() for cmd, rest in s.lines if cmd == "COPY"
                   for flags, srcs, _ in [copy_args(rest)] if "from" not in flags for src in srcs}
        tracked = run(["git", "ls-files", "--", *sources], cwd=ROOT, check=True).stdout.split()  # noqa: S607
        assert tracked and [p for p in tracked if ignored(p, self.patterns)] == []


def settings_names() -> set[str]:
    return {f"SMECREDIT_{name.upper()}" for name in Settings.model_fields}


class TestSettingsDocumented:
    def test_env_example_names_every_setting_and_nothing_else(self) -> None:
        example = (ROOT / ".env.example").read_text(encoding="utf-8")
        listed = set(re.findall(r"(?m)^#?\s*(SMECREDIT_[A-Z0-9_]+)=", example))
        assert not listed - settings_names(), f"not settings of service/config.py: {sorted(listed - settings_names())}"
        assert not settings_names() - listed, f"add to .env.example: {sorted(settings_names() - listed)}"

    def test_env_example_as_it_stands_is_refused_in_production(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in [n for n in os.environ if n.startswith("SMECREDIT_") or n == "DATABASE_URL"]:
            monkeypatch.delenv(name)
        example = (ROOT / ".env.example").read_text(encoding="utf-8")
        for name, value in re.findall(r"(?m)^(SMECREDIT_[A-Z0-9_]+)=(.*)$", example):
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("SMECREDIT_ENVIRONMENT", "production")  # as the image sets it
        with pytest.raises(ValueError, match="unsafe production settings") as refused:
            Settings()
        for secret in SECRETS:
            assert secret in str(refused.value)

    def test_readme_lists_every_setting(self) -> None:
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        assert [s for s in sorted(settings_names()) if f"`{s}`" not in readme] == []


class TestCompose:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))

    def test_the_service_postgresql_and_redis_with_healthchecks(self) -> None:
        services = self.compose["services"]
        for name in ("api", "db", "redis"):
            assert services[name]["healthcheck"]["test"], name
        assert services["db"]["image"].startswith("postgres:") and services["redis"]["image"].startswith("redis:")
        assert services["api"]["build"]["target"] == "serve"
        assert {k: v["condition"] for k, v in services["api"]["depends_on"].items()} == \
            {"db": "service_healthy", "redis": "service_healthy"}
        assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])

    def test_settings_are_real_and_secrets_come_from_the_env_file(self) -> None:
        api = self.compose["services"]["api"]
        env = api["environment"]
        assert set(env) <= settings_names(), set(env) - settings_names()
        assert re.fullmatch(r"postgresql\+psycopg://smecredit:\$\{POSTGRES_PASSWORD:\?[^}]+\}@db:5432/smecredit",
                            env["SMECREDIT_DATABASE_URL"]), env["SMECREDIT_DATABASE_URL"]
        assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:6379/0", env["SMECREDIT_REDIS_URL"])
        assert not set(SECRETS) & set(env)
        assert [f["path"] for f in api["env_file"]] == [".env"]
        assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()

    def test_the_registry_is_a_named_volume_at_the_image_registry_path(self) -> None:
        registry = image_env(TestDockerfile.stages, "serve")["SMECREDIT_REGISTRY"]
        mounts = dict(v.split(":")[:2][::-1] for v in self.compose["services"]["api"]["volumes"])
        assert mounts[registry] in self.compose["volumes"]


class TestBatchExample:
    body = json.loads((ROOT / "openapi" / "examples" / "score_batch_request.json").read_text(encoding="utf-8"))

    def test_valid_against_the_committed_openapi_schema(self) -> None:
        import jsonschema_rs

        spec = json.loads((ROOT / "openapi" / "openapi.json").read_text(encoding="utf-8"))
        operation = next(op for path in spec["paths"].values() for op in path.values()
                         if op.get("operationId") == "create_scores_batch")
        schema = {**operation["requestBody"]["content"]["application/json"]["schema"],
                  "components": spec["components"]}
        validator = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
        assert [e.message for e in validator.iter_errors(self.body)] == []
        assert not validator.is_valid({"items": [{**self.body["items"][0], "extra": 1}]})  # the schema is strict

    def test_valid_for_the_api_and_within_the_batch_limit(self) -> None:
        from service.api.schemas import BatchScoreRequest

        request = BatchScoreRequest.model_validate(self.body)
        assert 2 <= len(request.items) <= Settings().max_batch
        single = json.loads((ROOT / "openapi" / "examples" / "score_request.json").read_text(encoding="utf-8"))
        assert self.body["items"][0] == single  # the README's example leads the batch
        sources = [tuple(s for s, granted in item["consent"].items() if granted) for item in self.body["items"]]
        assert len(set(sources)) == len(sources)  # full, with the bureau, and a thin file

    def test_scored_by_the_service(self, api) -> None:  # noqa: ANN001
        r = api.client.post("/v1/scores/batch", json=self.body, headers=api.headers())
        assert r.status_code == 200, r.text
        assert [i["application_id"] for i in r.json()["items"]] == \
            [i["application"]["application_id"] for i in self.body["items"]]
