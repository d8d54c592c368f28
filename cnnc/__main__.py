"""``python -m cnnc``: the same command line as the ``cnnc`` script."""

from cnnc.cli import main

main()
