"""codegen: compile a refexit model + exit policy into a dependency-free C library.

    lower (Model + Policy -> Plan) -> pack (weights blob) -> emit (C from templates/) -> build (cc)
    -> binding (cffi): compile_model(...) / load_compiled(...) -> CompiledModel.classify(enc)
"""
from .binding import CompiledModel, compile_model, load_compiled
from .build import BuildError
from .cascade import Cascade, compile_cascade

__all__ = ["CompiledModel", "compile_model", "load_compiled", "BuildError", "Cascade", "compile_cascade"]
