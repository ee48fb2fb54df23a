"""The files that `trust_remote_code` executes on users' machines do nothing but define the model.

The code files of each early-exit model (`CODE_FILES_BY_MODEL_TYPE`: `configuration_hubert_ee.py`,
`modeling_hubert_ee.py`, `configuration_wav2vec2_ee.py`, `modeling_wav2vec2_ee.py` and the shared
`configuration_early_exit.py`, `modeling_early_exit.py`) travel to the Hub beside the weights. A static (ast) check
keeps them free of anything a reviewer of remote code would have to worry about: file or network access, process
control, dynamic code, unpickling. Each rule is tested to fire on a small bad snippet, and to leave alone the
constructs the files legitimately use.

Rules (rule id: what is flagged):

* `import`: an import whose top-level module is not `torch`, `transformers`, `typing`, `dataclasses`,
  `__future__` or `soxr` (the resampler, imported only inside the pipeline's `resample`, in a `try` that turns its
  absence into an error saying how to install it: `test_hub_integration.py` checks that placement), other than the code files themselves (absolute, or relative `.configuration_hubert_ee`), which
  are checked too; any other relative import; and, even inside torch/transformers, the modules that download, compile, unpickle or start
  processes (`DENIED_SUBMODULES`), whether imported as `import a.b` or `from a import b`; a `from ... import` of a
  function named like the I/O calls below (`from torch import load`). One module under a denied one is allowed
  (`ALLOWED_SUBMODULES`): `transformers.pipelines.automatic_speech_recognition`, whose pipeline class the model
  file subclasses so that the user's own `pipeline("automatic-speech-recognition", ...)` call passes early-exit
  settings on; the subclass adds no I/O, and the code it inherits is what that call runs anyway.
* `builtin`: any use (call or reference, so `f = eval` counts) of `open`, `eval`, `exec`, `compile`,
  `__import__`, `breakpoint`, `globals`. (Method calls with these names, such as `torch.compile`, are attributes,
  not these builtins.)
* `module`: a name or attribute that is one of the system modules `os`, `subprocess`, `socket`, `urllib`,
  `requests`, `http`, `shutil`, `pathlib`, `sys`, `importlib`, `pickle`, `ctypes`, `builtins`, `io`,
  `tempfile`, `multiprocessing`, or a denied torch/transformers submodule (`torch.hub`, `x.os.system`, `os.path`).
* `getattr`: `getattr(...)` whose object is such a module name or whose attribute is a string naming one of the
  flagged modules, builtins or I/O functions (`getattr(torch, "load")`).
* `io`: a call of a method named `write`, `writelines`, `write_text`, `write_bytes`, `save`, `load`,
  `load_library`, `from_file`, `system` or `popen` (so `torch.save`, `torch.load`, `f.write`). Only calls: method
  *definitions* with these names are fine, and so are longer names such as `load_state_dict`, `save_pretrained`.
* `dunder`: the attributes/names used to escape restrictions: `__builtins__`, `__globals__`, `__subclasses__`,
  `__code__`, `__loader__`, `__spec__`, `__import__`.
* `url`: a string (or bytes) literal containing `http://`, `https://`, `ftp://`, `ws://` or `wss://`, except in
  docstrings (comments are not in the syntax tree at all).
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest
import torch

from hubert_ee import CODE_FILES_BY_MODEL_TYPE
from hubert_ee.export import CODE_FILES, save_hub_folder
from hubert_ee.text import build_processor
from modeling_hubert_ee import HubertEEForCTC
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]

ALLOWED_ROOTS = {"torch", "transformers", "typing", "dataclasses", "__future__", "soxr"}
ALL_CODE_FILES = sorted({name for names in CODE_FILES_BY_MODEL_TYPE.values() for name in names})
OWN_MODULES = {name.removesuffix(".py") for name in ALL_CODE_FILES}
DENIED_SUBMODULES = {
    "torch.hub", "torch.utils.cpp_extension", "torch.package", "torch.multiprocessing", "torch.distributed",
    "torch.serialization", "torch.utils.model_zoo", "transformers.dynamic_module_utils", "transformers.utils.hub",
    "transformers.trainer", "transformers.pipelines",
}  # fmt: skip
ALLOWED_SUBMODULES = {"transformers.pipelines.automatic_speech_recognition"}
SYSTEM_MODULES = {
    "os", "subprocess", "socket", "urllib", "requests", "http", "shutil", "pathlib", "sys", "importlib", "pickle",
    "ctypes", "builtins", "io", "tempfile", "multiprocessing",
}  # fmt: skip
DENIED_ATTRIBUTES = SYSTEM_MODULES | {name.rsplit(".", 1)[1] for name in DENIED_SUBMODULES}
FORBIDDEN_BUILTINS = {"open", "eval", "exec", "compile", "__import__", "breakpoint", "globals"}
IO_METHODS = {"write", "writelines", "write_text", "write_bytes", "save", "load", "load_library", "from_file",
              "system", "popen"}
ESCAPE_DUNDERS = {"__builtins__", "__globals__", "__subclasses__", "__code__", "__loader__", "__spec__", "__import__"}
URL_SCHEMES = ("http://", "https://", "ftp://", "ws://", "wss://")


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                first.value.value, str
            ):
                ids.add(id(first.value))
    return ids


def _check_module_name(module: str, line: int, problems: list) -> None:
    root = module.split(".")[0]
    if root not in ALLOWED_ROOTS and module not in OWN_MODULES:
        problems.append((line, "import", f"imports {module!r}"))
    elif module in ALLOWED_SUBMODULES:
        return
    elif any(module == denied or module.startswith(denied + ".") for denied in DENIED_SUBMODULES):
        problems.append((line, "import", f"imports {module!r}, which downloads, compiles, unpickles or spawns"))


def check_source(source: str, filename: str = "<snippet>") -> list[tuple[int, str, str]]:
    """`(line, rule, message)` for every construct the rules in the module docstring flag."""
    tree = ast.parse(source, filename=filename)
    docstrings = _docstring_nodes(tree)
    problems: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                _check_module_name(alias.name, line, problems)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if not (node.level == 1 and node.module in OWN_MODULES):
                    problems.append((line, "import", f"relative import {'.' * node.level}{node.module or ''}"))
            else:
                _check_module_name(node.module, line, problems)
                for alias in node.names:  # `from torch import hub` imports the submodule torch.hub
                    if f"{node.module}.{alias.name}" in DENIED_SUBMODULES:
                        _check_module_name(f"{node.module}.{alias.name}", line, problems)
            for alias in node.names:
                if alias.name in IO_METHODS or alias.name in FORBIDDEN_BUILTINS:
                    problems.append((line, "import", f"imports the function {alias.name!r}"))
        elif isinstance(node, ast.Name):
            if node.id in FORBIDDEN_BUILTINS:
                problems.append((line, "builtin", f"uses the builtin {node.id!r}"))
            elif node.id in ESCAPE_DUNDERS:
                problems.append((line, "dunder", f"uses {node.id!r}"))
            elif node.id in SYSTEM_MODULES:
                problems.append((line, "module", f"uses the module name {node.id!r}"))
        elif isinstance(node, ast.Attribute):
            if node.attr in ESCAPE_DUNDERS:
                problems.append((line, "dunder", f"accesses .{node.attr}"))
            elif node.attr in DENIED_ATTRIBUTES:
                problems.append((line, "module", f"accesses .{node.attr}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and id(node) not in docstrings:
            text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            if any(scheme in text.lower() for scheme in URL_SCHEMES):
                problems.append((line, "url", f"string literal with a network address: {text[:60]!r}"))
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in IO_METHODS:
                problems.append((line, "io", f"calls .{func.attr}(...)"))
            if isinstance(func, ast.Name) and func.id == "getattr" and node.args:
                target = node.args[0]
                name = node.args[1] if len(node.args) > 1 else None
                flagged_names = SYSTEM_MODULES | DENIED_ATTRIBUTES | FORBIDDEN_BUILTINS | IO_METHODS | ESCAPE_DUNDERS
                if isinstance(target, ast.Name) and target.id in SYSTEM_MODULES | {"__builtins__", "builtins"}:
                    problems.append((line, "getattr", f"getattr on the module {target.id!r}"))
                elif isinstance(name, ast.Constant) and name.value in flagged_names:
                    problems.append((line, "getattr", f"getattr(..., {name.value!r})"))
    return sorted(set(problems))


def check_file(path: Path) -> list[tuple[int, str, str]]:
    return check_source(Path(path).read_text(encoding="utf-8"), str(path))


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_CODE_FILES)
def test_code_files_pass(name):
    assert check_file(ROOT / name) == []


def test_only_the_checked_files_travel_with_the_weights(tmp_path):
    torch.manual_seed(0)
    folder = save_hub_folder(HubertEEForCTC(tiny_config(exit_branch="linear")), build_processor(), tmp_path / "hub")
    shipped = sorted(path.name for path in folder.iterdir() if path.suffix in (".py", ".pyc", ".pkl", ".pt", ".bin"))
    assert shipped == sorted(CODE_FILES)  # no other code, no pickles: weights are safetensors only
    for name in CODE_FILES:
        assert check_file(folder / name) == []


BAD_SNIPPETS = {
    "import os": ("import", "import os\n"),
    "import os.path": ("import", "import os.path as p\n"),
    "from subprocess": ("import", "from subprocess import run\n"),
    "import requests": ("import", "import requests\n"),
    "import numpy": ("import", "import numpy\n"),
    "from huggingface_hub": ("import", "from huggingface_hub import hf_hub_download\n"),
    "import torch.hub": ("import", "import torch.hub\n"),
    "from torch import hub": ("import", "from torch import hub\n"),
    "from torch.utils.cpp_extension": ("import", "from torch.utils.cpp_extension import load_inline\n"),
    "from transformers.dynamic_module_utils": (
        "import", "from transformers.dynamic_module_utils import get_class_from_dynamic_module\n"),
    "from transformers.utils import hub": ("import", "from transformers.utils import hub\n"),
    "from transformers.pipelines": ("import", "from transformers.pipelines import pipeline\n"),
    "another pipelines module": ("import", "from transformers.pipelines.audio_utils import ffmpeg_read\n"),
    "from torch import load": ("import", "from torch import load\n"),
    "relative import of another file": ("import", "from .helpers import run\n"),
    "relative import two levels up": ("import", "from ..configuration_hubert_ee import HubertEEConfig\n"),
    "open": ("builtin", "def f(path):\n    return open(path).read()\n"),
    "eval": ("builtin", "x = eval('1 + 1')\n"),
    "exec": ("builtin", "exec('print(1)')\n"),
    "compile": ("builtin", "code = compile('1', 'f', 'eval')\n"),
    "__import__": ("builtin", "m = __import__('os')\n"),
    "aliased eval": ("builtin", "run = eval\n"),
    "breakpoint": ("builtin", "breakpoint()\n"),
    "globals": ("builtin", "g = globals()\n"),
    "getattr os": ("getattr", "import torch\nf = getattr(os, 'system')\n"),
    "getattr string module": ("getattr", "import torch\nhub = getattr(torch, 'hub')\n"),
    "getattr string io": ("getattr", "import torch\nload = getattr(torch, 'load')\n"),
    "os attribute": ("module", "x = os.environ['HOME']\n"),
    "sys attribute": ("module", "sys.exit(0)\n"),
    "pathlib attribute": ("module", "p = pathlib.Path('x')\n"),
    "shutil attribute": ("module", "shutil.rmtree('/')\n"),
    "socket attribute": ("module", "s = socket.socket()\n"),
    "urllib attribute": ("module", "urllib.request.urlopen('x')\n"),
    "subprocess attribute": ("module", "subprocess.run(['ls'])\n"),
    "requests attribute": ("module", "requests.get('x')\n"),
    "torch.hub attribute": ("module", "import torch\nm = torch.hub.load('a', 'b')\n"),
    "os reached through a module": ("module", "import torch\ntorch.serialization.os.system('ls')\n"),
    "torch.save": ("io", "import torch\ntorch.save({}, 'x.pt')\n"),
    "torch.load": ("io", "import torch\nstate = torch.load('x.pt')\n"),
    "file write": ("io", "def f(handle):\n    handle.write('x')\n"),
    "save call": ("io", "def f(model):\n    model.save('x')\n"),
    "torch.ops.load_library": ("io", "import torch\ntorch.ops.load_library('x.so')\n"),
    "write_text": ("io", "def f(path):\n    path.write_text('x')\n"),
    "__builtins__": ("dunder", "b = __builtins__\n"),
    "__subclasses__": ("dunder", "classes = object.__subclasses__()\n"),
    "__globals__": ("dunder", "def f():\n    pass\ng = f.__globals__\n"),
    "https url": ("url", "URL = 'https://example.com/model.bin'\n"),
    "http url in f-string": ("url", "def f(name):\n    return f'http://evil.test/{name}'\n"),
    "url in error message": ("url", "def f():\n    raise ValueError('see https://x.test')\n"),
    "url bytes": ("url", "HOST = b'http://10.0.0.1/'\n"),
    "url in a non-docstring expression": ("url", "def f():\n    x = 1\n    'https://x.test'\n"),
}


@pytest.mark.parametrize("rule,source", list(BAD_SNIPPETS.values()), ids=list(BAD_SNIPPETS))
def test_each_rule_fires(tmp_path, rule, source):
    path = tmp_path / "modeling_bad.py"
    path.write_text(source)
    problems = check_file(path)
    assert rule in {found for _, found, _ in problems}, problems


def test_every_rule_has_a_firing_snippet():
    assert {rule for rule, _ in BAD_SNIPPETS.values()} == {"import", "builtin", "getattr", "module", "io", "dunder",
                                                         "url"}
    for name in FORBIDDEN_BUILTINS:  # each builtin on the list is a real builtin, flagged when used
        assert hasattr(builtins, name) and check_source(f"x = {name}\n")


GOOD_SNIPPETS = {  # constructs the two files use (or inherit), which must stay allowed
    "relative import of the config": "from .configuration_hubert_ee import HubertEEConfig\n",
    "absolute import of the config": "from configuration_hubert_ee import HubertEEConfig\n",
    "torch and transformers": "import torch\nfrom torch import nn\nfrom transformers.utils import logging\n"
                              "from transformers.models.hubert.modeling_hubert import HubertModel\n",
    "typing helpers": "from __future__ import annotations\nfrom dataclasses import dataclass\nfrom typing import Any\n",
    "load_state_dict": "def f(branch, layer):\n    branch.load_state_dict(layer.state_dict())\n",
    "from_pretrained and get_config_dict": "def f(cls, path):\n    cls.get_config_dict(path)\n"
                                           "    return super().from_pretrained(path)\n",
    "save and load method definitions": "class M:\n    def save(self):\n        pass\n    def load(self):\n"
                                        "        pass\n",
    "getattr on config": "def f(config, name):\n    return getattr(config, 'auto_map', None), getattr(config, name)\n",
    "url in docstrings": '"""See https://arxiv.org/abs/2204.06328."""\n\n\ndef f():\n    """http://x.test"""\n',
    "url in a comment": "x = 1  # https://huggingface.co/docs\n",
    "__dict__ and __name__": "def f(self):\n    self.__dict__.pop('model_type', None)\n    return __name__\n",
    "__dataclass_fields__": "def f(cls):\n    return set(cls.__dataclass_fields__)\n",
    "logger.warning": "def f(logger):\n    logger.warning('x')\n",
    "a cudnn flag context": "import torch\nwith torch.backends.cudnn.flags(enabled=False):\n    pass\n",
    "the ASR pipeline class": "from transformers.pipelines.automatic_speech_recognition import "
                              "AutomaticSpeechRecognitionPipeline, rescale_stride\n",
}


@pytest.mark.parametrize("source", list(GOOD_SNIPPETS.values()), ids=list(GOOD_SNIPPETS))
def test_allowed_constructs_pass(tmp_path, source):
    path = tmp_path / "modeling_good.py"
    path.write_text(source)
    assert check_file(path) == []


def test_the_files_really_use_the_allowed_constructs():
    """The allowed list is not hypothetical: these are in the shipped files today."""
    modeling = "".join((ROOT / name).read_text() for name in ("modeling_hubert_ee.py", "modeling_early_exit.py"))
    configuration = "".join((ROOT / name).read_text() for name in ("configuration_hubert_ee.py",
                                                                  "configuration_early_exit.py"))
    for fragment in ("from .configuration_hubert_ee import HubertEEConfig",
                     "from configuration_hubert_ee import HubertEEConfig", ".load_state_dict(",
                     "super().from_pretrained(", "get_config_dict(", "getattr(config, \"auto_map\", None)",
                     "__dataclass_fields__", "torch.backends.cudnn.flags(",
                     "from transformers.pipelines.automatic_speech_recognition import"):
        assert fragment in modeling, fragment
    assert "self.__dict__.pop(" in configuration and "getattr(self, name)" in configuration
    assert "from .configuration_early_exit import" in configuration
