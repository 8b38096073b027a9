"""The bottom layer: what any other layer may import (typed configs, atomic writes, provenance)."""
