"""``python -m tdnotebooks.pretraining --mode sctd --steps 50``: the pretraining command line (any
:class:`~tdnotebooks.pretraining.train.PretrainConfig` field is a flag; ``--help`` lists them)."""

from tdnotebooks.pretraining.train import main

if __name__ == "__main__":
    main()
