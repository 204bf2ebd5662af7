"""JIT flags of every numba kernel, in one place (STYLE.md point 4).

``cache=True`` stores compiled kernels on disk so a second process starts in a
fraction of a second; ``fastmath`` stays off because reordered float
arithmetic would break bit-for-bit reproducibility.

The on-disk cache lives in a per-user folder keyed by the package version
(:func:`cache_dir`, e.g. ``~/.cache/journey-engine/0.1.0/numba``), never
beside the modules: a cache written into an installed package outlives
``pip uninstall`` and, left behind as a bare ``sim/`` folder, shadows a later
editable install. A new version compiles into its own folder, so it never
loads kernels compiled from an older version's helpers. An explicit
``NUMBA_CACHE_DIR`` (or ``numba.config.CACHE_DIR`` set by the caller) wins.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any, cast

import numba
from numba.core.caching import FunctionCache
from numba.core.runtime import rtsys

__all__ = ["Flags", "cache_dir", "flag_bits", "inner_kernel", "kernel", "parallel_kernel"]

logger = logging.getLogger(__name__)

_config: Any = numba.config  # numba's settings module; Any, as numba's typing varies by release

_FLAGS: dict[str, Any] = {"nogil": True, "fastmath": False, "error_model": "numpy",
                          "no_cfunc_wrapper": True}
"""``no_cfunc_wrapper``: no kernel is passed as a first-class function, so none needs the
C-callable wrapper numba builds beside the Python one by default (a thousand lines of
LLVM IR for a kernel taking the model's named tuples, optimised and assembled each cold
start)."""


def cache_dir() -> str:
    """The folder numba caches this package's compiled kernels in.

    Returns:
        ``NUMBA_CACHE_DIR`` when that environment variable is set (even after
        numba was imported), else ``numba.config.CACHE_DIR`` when the caller
        set it, else ``<user cache dir>/journey-engine/<version>/numba``
        (platformdirs: ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux,
        ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows).

    Example:
        >>> from sim._jit import cache_dir
        >>> cache_dir()  # doctest: +SKIP
        '/home/me/.cache/journey-engine/0.1.0/numba'
    """
    explicit = os.environ.get("NUMBA_CACHE_DIR") or _config.CACHE_DIR
    if explicit:
        return str(explicit)
    import platformdirs

    import sim

    return os.path.join(platformdirs.user_cache_dir("journey-engine", appauthor=False,
                                                    version=sim.__version__), "numba")


@functools.cache
def _writable(directory: str) -> bool:
    """Whether ``directory`` exists or can be made, and takes a file (numba's own test).

    Asked once per folder and process; a folder that fails is logged once.
    """
    try:
        os.makedirs(directory, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as exc:
        logger.warning("numba's cache folder %s is not writable (%s); kernels are compiled "
                       "in every process (set NUMBA_CACHE_DIR to a writable folder)",
                       directory, exc)
        return False
    return True


def _jit(*, parallel: bool) -> Callable[[Callable[..., Any]], Any]:
    """A decorator that compiles with the shared flags and caches in :func:`cache_dir`.

    numba picks a dispatcher's cache folder once, when the decorator runs, from
    ``numba.config.CACHE_DIR`` (``numba.core.caching.UserProvidedCacheLocator``);
    when that folder is not writable it would fall back to ``__pycache__`` beside
    the module. So the folder is set only while each kernel is decorated (other
    code's ``cache=True`` functions keep numba's own default) and a kernel whose
    folder cannot be written is compiled without a cache instead.
    """

    def decorate(func: Callable[..., Any]) -> Any:
        if _config.DISABLE_JIT:
            return numba.njit(parallel=parallel, **_FLAGS)(func)
        directory = cache_dir()
        saved = _config.CACHE_DIR
        _config.CACHE_DIR = directory
        try:
            dispatcher = numba.njit(parallel=parallel, **_FLAGS)(func)
            if _writable(directory):
                dispatcher._cache = _kernel_cache(dispatcher.py_func)
            return dispatcher
        finally:
            _config.CACHE_DIR = saved

    return decorate


class _KernelCache(FunctionCache):
    """numba's on-disk cache of a kernel, loading it without first readying numba to compile.

    numba's ``Cache.load_overload`` refreshes the target context before it loads: it
    imports numba's whole library of implementations and typing templates (SciPy's
    linear algebra with it, through numba's check for a BLAS) and registers them. Code
    loaded from the cache is machine code and uses none of it: a cached ``journey run``
    spent about 0.3 s of its 1.1 s there. This cache registers only the runtime's
    symbols, which loaded code calls (the refresh's first step, ``rtsys.initialize``),
    then loads as numba does. A kernel that is not in the cache is compiled as before:
    numba's compiler refreshes both contexts itself (``CompilerBase.__init__``).
    """

    def load_overload(self, sig: Any, target_context: Any) -> Any:
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


def _kernel_cache(func: Callable[..., Any]) -> Any:
    """:class:`_KernelCache` of ``func``; numba's own cache with a numba whose cache lacks
    the methods it relies on."""
    if all(hasattr(FunctionCache, name) for name in
           ("_load_overload", "_guard_against_spurious_io_errors")):
        return _KernelCache(func)
    return FunctionCache(func)  # pragma: no cover - a numba this was not written for


_RETURNS = {"None": "none", "int": "int64", "float": "float64", "bool": "boolean",
            "np.int64": "int64", "np.uint64": "uint64"}
"""numba's type of each return annotation an inner kernel may have."""


class _Lowered:
    """A subroutine's library as its caller's finalization links it, without finalizing it.

    numba links a subroutine's library into its caller only once that library is
    *finalized*: optimised as a whole module and assembled into machine code of its
    own, which nothing runs, since the caller's module is then optimised and assembled
    again with the subroutine inside. A cold start spent about a tenth of its time so.
    This stands in the caller's list of libraries to link (``_linking_libraries``, read
    by numba's ``finalize``) with the subroutine's module as lowered (not optimised:
    :func:`_optimised_once`), the modules of the subroutines it calls linked in,
    public functions made ``linkonce_odr`` as numba does for linking.
    """

    def __init__(self, library: Any) -> None:
        self.library = library
        self._reload_init = library._reload_init
        self._module: Any = None

    def _ensure_finalized(self) -> None:
        """Nothing to finalize: the caller's finalization optimises this code."""

    def dependencies(self) -> list[Any]:
        """The finalized libraries this code links (other dispatchers', numba's helpers),
        its subroutines' included."""
        found: list[Any] = []
        for library in self.library._linking_libraries:
            found.extend(library.dependencies() if isinstance(library, _Lowered)
                         else [library])
        return found

    def _get_module_for_linking(self) -> Any:
        if self._module is None:
            from llvmlite import binding

            module = self.library._final_module.clone()
            for library in self.library._linking_libraries:
                if isinstance(library, _Lowered):
                    module.link_in(library._get_module_for_linking(), preserve=True)
            for function in module.functions:
                if not function.is_declaration and function.linkage == binding.Linkage.external:
                    function.linkage = "linkonce_odr"
            self._module = module
        return self._module


def _optimised_once(library: Any) -> None:
    """Have ``library`` take its lowered functions as they are, for the caller's
    finalization to optimise.

    numba optimises each function as it is added to a library (LLVM's function
    simplification pipeline at ``NUMBA_OPT``) before the whole module is optimised when
    it is finalized. A subroutine's functions are finalized only inside their caller's
    module (:class:`_Lowered`), whose optimisation runs the same simplification on every
    function again before inlining it, so the first pass was work done twice. Skipping
    it cut a cold start's LLVM time by about a third (the machine code of the step loop
    came out smaller, 398 against 556 kB, with the same tables). The data layout, which
    numba sets there too, is still set.
    """
    codegen: Any = getattr(library, "_codegen", None)
    if hasattr(library, "_optimize_functions") and hasattr(codegen, "_data_layout"):
        def set_layout(module: Any) -> None:
            module.data_layout = codegen._data_layout

        library._optimize_functions = set_layout


def _subroutine(context: Any, func: Callable[..., Any], sig: Any) -> Any:
    """Compile ``func`` for ``sig`` as a subroutine, once per process (numba's
    ``compile_subroutine``), and have the library being compiled link its code as
    lowered (:class:`_Lowered`); returns numba's compile result. Where numba's
    libraries lack the parts this uses, numba's own path is taken.

    The subroutine is compiled without numba's reference counting (NRT): it allocates
    nothing and only borrows its caller's arrays for the call, so the counts it would
    raise and drop on every array it names (emitted by the lowering, then mostly
    pruned by LLVM) are left out; a cold start took about 5% fewer instructions.
    """
    from numba.core import compiler
    from numba.core.compiler_lock import global_compiler_lock

    key = ("journey-engine subroutine", func.__code__, sig)
    with global_compiler_lock:
        cached = context.cached_internal_func.get(key)
        if cached is None:
            flags: Any = compiler.Flags()  # numba's option descriptors confuse mypy
            flags.nrt = False
            flags.error_model = _FLAGS["error_model"]
            flags.no_compile = True
            flags.no_cpython_wrapper = True
            flags.no_cfunc_wrapper = True
            library = context.codegen().create_library(func.__name__)
            _optimised_once(library)
            compiled = compiler.compile_internal(context.typing_context,
                                                 context.subtarget(enable_nrt=False), library,
                                                 func, sig.args, sig.return_type, flags,
                                                 locals={})
            usable = all(hasattr(library, name) for name in
                         ("_final_module", "_linking_libraries", "_reload_init"))
            cached = compiled, (_Lowered(library) if usable else None)
            context.cached_internal_func[key] = cached
        compiled, lowered = cached
        caller = context.active_code_library
        if lowered is None or not hasattr(caller, "_linking_libraries"):
            caller.add_linking_library(compiled.library)  # numba's own path
        else:
            caller.add_linking_library(lowered)
            for library in lowered.dependencies():
                caller.add_linking_library(library)
        return compiled


def inner_kernel(func: Callable[..., Any]) -> Any:
    """A serial kernel called only from other kernels, compiled as a subroutine of each.

    Its body is typed and lowered once per process and argument types (as numba's
    ``compile_subroutine`` compiles numba's own library functions) and linked, as
    lowered, into the calling kernel (:func:`_subroutine`), whose on-disk cache holds
    it. A dispatcher would cost more for the same code: a Python wrapper that unboxes
    its arguments (dozens of arrays in the model's and the state's named tuples), a
    typing template per call site, its own cache entry. Calling it from Python fails (a
    test calls it through a compiled function of its own). The return annotation
    (``None``, ``int``, ``float``, ``bool``, ``np.int64`` or ``np.uint64``) gives
    the return type; the flags are the other kernels' (:data:`_FLAGS`). It allocates
    no arrays: it is compiled without reference counting, and numba refuses
    ``np.zeros`` and the like there when it compiles.
    """
    if _config.DISABLE_JIT:
        return func
    import inspect

    from numba.core import types
    from numba.extending import intrinsic

    returns = getattr(types, _RETURNS[str(inspect.signature(func).return_annotation)])
    names = ", ".join(inspect.signature(func).parameters)

    def define(*args: Any) -> Any:
        signature = returns(*args)

        def codegen(context: Any, builder: Any, sig: Any, values: Any) -> Any:
            compiled = _subroutine(context, func, sig)
            return context.call_internal(builder, compiled.fndesc, sig, values)

        return signature, codegen

    # numba folds a call's arguments by the typing function's own parameters, so the
    # typing function takes the kernel's (a ``*args`` one cannot be lowered)
    scope: dict[str, Any] = {"define": define}
    exec(f"def {func.__name__}(typingctx, {names}):\n    return define({names})\n", scope)
    typing = scope[func.__name__]
    typing.__doc__, typing.__module__ = func.__doc__, func.__module__
    return intrinsic(typing)


kernel = _jit(parallel=False)
"""Serial kernel: a pure function over arrays."""

parallel_kernel = _jit(parallel=True)
"""Parallel kernel: ``prange`` over fixed chunks of agents."""

class Flags:
    """Bits a kernel is compiled for: numba types a value by its bits (``Flags(5)``), so a
    kernel taking one is compiled once per value a process passes, and
    :func:`flag_bits` gives the bits inside it as a constant that LLVM folds (the code
    of a clear bit's branches is left out). Passing an int with numba's ``literally``
    would do the same, but every call from Python would first type the kernel for a
    plain int, fail, and only then find the compiled one.
    """

    __slots__ = ("bits",)

    def __init__(self, bits: int) -> None:
        self.bits = int(bits)

    def __repr__(self) -> str:
        return f"Flags({self.bits})"


def _bits_of(flags: Flags) -> int:
    return flags.bits


flag_bits: Callable[[Flags], int] = _bits_of
"""The bits of a :class:`Flags` value: a constant in compiled code, an attribute read
under ``NUMBA_DISABLE_JIT``."""


if not _config.DISABLE_JIT:
    from llvmlite import ir
    from numba.core import types
    from numba.extending import NativeValue, intrinsic, models, register_model, typeof_impl, unbox

    class FlagsType(types.Type):
        """numba's type of a :class:`Flags` value: one type for each value of the bits."""

        def __init__(self, bits: int) -> None:
            self.bits = int(bits)
            super().__init__(name=f"Flags({self.bits})")

    @typeof_impl.register(Flags)
    def _typeof_flags(value: Flags, context: Any) -> FlagsType:
        return FlagsType(value.bits)

    @register_model(FlagsType)
    class _FlagsModel(models.PrimitiveModel):
        """A byte that is never read: the value lives in the type."""

        def __init__(self, dmm: Any, fe_type: Any) -> None:
            super().__init__(dmm, fe_type, ir.IntType(8))

    @unbox(FlagsType)
    def _unbox_flags(typ: Any, obj: Any, c: Any) -> Any:
        return NativeValue(ir.Constant(ir.IntType(8), 0))

    @intrinsic
    def _flag_bits(typingctx: Any, flags: Any) -> Any:
        if not isinstance(flags, FlagsType):
            return None

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return context.get_constant(types.int64, sig.args[0].bits)

        return types.int64(flags), codegen

    flag_bits = cast(Callable[[Flags], int], _flag_bits)  # the compiled twin
