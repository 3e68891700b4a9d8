"""The `refexit` command lines (main.py dispatches to one module per command). The only part of
the refexit package that imports the compiler (`codegen`), with refexit.score (`refexit score`
runs the compiled model; both import codegen lazily, inside the command)."""
