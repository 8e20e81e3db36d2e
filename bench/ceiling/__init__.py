"""The Django ceiling for the intake benchmark: the least Django can do for the
same multipart POST. Never part of the product's URLconf."""
