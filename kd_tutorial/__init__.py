"""kd_tutorial: helpers for the knowledge-distillation course. Importing it loads neither transformers nor datasets."""
__version__ = "0.1.0"
