"""``rnnsim grad``: gradients for weights brought from PyTorch (placeholder, filled in next)."""
import click


@click.command()
def grad():
    """Compute gradients (not yet implemented)."""
    raise NotImplementedError
