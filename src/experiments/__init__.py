"""The paper's studies, built on the public API of `invertible`."""
