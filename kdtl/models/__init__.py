"""Teachers and students, chosen by registered name (``teacher: mlp``).

A factory takes its config node and the loaded :class:`~kdtl.data.DataBundle`
and returns a :class:`BuiltModel`: the Keras model plus the function that turns
the dataset's raw inputs into what that model eats (identity for features and
images, a tokenizer for text). Teacher and student may encode the same raw
example differently; the Distiller's batches carry both.
"""

from kdtl.models.base import STUDENTS, TEACHERS, BuiltModel, build_student, build_teacher
from kdtl.models import applications, bert, convnets, efficientnet, mlp, recurrent  # noqa: F401  (register)

__all__ = ["STUDENTS", "TEACHERS", "BuiltModel", "build_student", "build_teacher"]
