"""The library's stages import downwards only: a newcomer can read a stage knowing just the ones below it.

Every ``import segdiff...`` in ``src/segdiff`` (module level or inside a function) is checked against
:data:`LAYERS`: a subpackage may import its own modules and those of lower layers, never a higher one.
So ``sources`` and ``data`` never import ``models``, and nothing but the command line imports ``editor``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SRC = REPO / "src/segdiff"

#: subpackage -> layer; a module may import only from its own subpackage or a lower layer
LAYERS = {
    "core": 0,
    "sources": 1,
    "data": 2,
    "report": 3,  # figures and tables: models draw their loss curves, sampling its grids
    "models": 4,
    "sampling": 5,
    "evaluation": 6,
    "usefulness": 7,  # train on generated, test on real: sampling, segmentor training and scoring
    "pipeline": 8,
    "editor": 9,
    "cli": 10,
}
#: the top-level files of the package (not in a stage)
TOP = {"__init__": -1, "_api": -1, "cli": LAYERS["cli"]}


def stage_of(module: str) -> str:
    """``segdiff.data.store`` -> ``data``; ``segdiff.cli`` -> ``cli``; ``segdiff`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """The segdiff modules ``path`` imports, with line numbers (function-level imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "segdiff"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "segdiff":
            found.append((node.lineno, node.module))
    return found


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def layer(stage: str) -> int:
    return LAYERS.get(stage, TOP.get(stage, 99))


def violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        own = stage_of(module_name(path))
        for line, target in imports_of(path):
            other = stage_of(target)
            if other == own or TOP.get(other) == -1:  # the package's own top: version, lazy API helper
                continue
            if other not in LAYERS:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target}: not a stage of {sorted(LAYERS)}")
            elif layer(other) >= layer(own):
                bad.append(f"{path.relative_to(REPO)}:{line} ({own}, layer {layer(own)}) imports {target} "
                           f"({other}, layer {layer(other)})")
    return bad


def test_every_module_lives_in_a_stage():
    loose = [p.name for p in SRC.glob("*.py") if p.stem not in TOP]  # cli.py, _api.py and __init__.py only
    assert not loose, f"modules outside a stage subpackage: {loose}"
    assert {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()} == set(LAYERS) - {"cli"}


def test_stages_import_only_lower_layers():
    assert violations() == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """The walker finds module-level and function-level imports (a check that sees nothing passes anything)."""
    bad = tmp_path / "segdiff/data/bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("import segdiff.core.errors\n\ndef f():\n    from segdiff.models.diffusion import load_diffusion\n")
    assert imports_of(bad) == [(1, "segdiff.core.errors"), (4, "segdiff.models.diffusion")]
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path / "segdiff")
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    assert violations() == ["segdiff/data/bad.py:4 (data, layer 2) imports segdiff.models.diffusion (models, layer 4)"]


@pytest.mark.parametrize("stage", sorted(set(LAYERS) - {"cli"}))
def test_each_stage_names_its_api(stage):
    """Each subpackage's ``__init__`` re-exports its public API (as MONAI's do) and imports cleanly."""
    import importlib

    package = importlib.import_module(f"segdiff.{stage}")
    assert package.__doc__ and package.__all__, stage
    missing = [name for name in package.__all__ if not hasattr(package, name)]
    assert not missing, f"segdiff.{stage}.__all__ names {missing}, which it does not define"


def test_parsing_the_workflow_imports_no_torch():
    """The rule files' imports (every Slurm job re-parses the workflow) load neither torch nor MONAI:
    the stages' ``__init__`` files name their APIs lazily (``segdiff._api``)."""
    imports = sorted({line for smk in (REPO / "workflow/rules").glob("*.smk")
                      for line in smk.read_text().splitlines() if re.match(r"from segdiff[\w.]* import ", line)})
    assert len(imports) >= 5, imports
    code = "\n".join([*imports, "import sys", "print(sorted({'torch', 'monai', 'matplotlib'} & set(sys.modules)))"])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


#: the workflow scripts that run a model (or fetch its weights): the only ones that may import torch and MONAI
MODEL_SCRIPTS = {"evaluate", "fetch_inception_weights", "oracle_trainset", "sample_chunk", "sample_trainset",
                 "score_usefulness", "train_diffusion", "train_segmentor"}


def test_scripts_that_run_no_model_import_neither_torch_nor_monai():
    """Data, gather, figure and table jobs start in about a second: importing torch and MONAI costs ~6 s a job
    on 2 cores, and the tiny study has 45 jobs. Each script's imports run in turn in one fresh process; the
    first that loads torch or MONAI is named."""
    scripts = sorted(p for p in (REPO / "workflow/scripts").glob("*.py") if p.stem not in MODEL_SCRIPTS)
    assert {"gather_samples", "evaluation_figures", "slice_case", "table"} <= {p.stem for p in scripts}
    lines = []
    for script in scripts:
        imports = [line for line in script.read_text().splitlines() if re.match(r"from segdiff[\w.]* import ", line)]
        lines += [*imports, f"if {{'torch', 'monai'}} & set(sys.modules): print({script.stem!r}); sys.exit()"]
    code = "\n".join(["import sys", *lines, "print('none')"])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "none", f"{proc.stdout.strip()} imports torch or MONAI"

