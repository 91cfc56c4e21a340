"""``python -m mnistlab`` (also what ``torchrun -m mnistlab`` runs)."""

from mnistlab.cli.main import main

if __name__ == "__main__":
    main()
