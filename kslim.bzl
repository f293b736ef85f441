"""Build macros for kslim: the one place to switch to rules_python later."""

def kslim_py_library(name, **kwargs):
    """A pure-Python library target."""
    native.py_library(name = name, srcs_version = "PY3", **kwargs)

def kslim_py_test(name, srcs = None, size = "medium", **kwargs):
    """A Python test target; `name` is the test file without `.py`.

    Tests are absltest modules, so the same file runs under pytest and under Bazel.
    """
    native.py_test(
        name = name,
        srcs = srcs or [name + ".py"],
        main = (srcs or [name + ".py"])[0],
        python_version = "PY3",
        srcs_version = "PY3",
        size = size,
        **kwargs
    )
