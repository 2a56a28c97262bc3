"""`python -m perimeter.cli ...`: the same command as the `perimeter` console script."""

from perimeter.cli import main

main()
