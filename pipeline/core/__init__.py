"""The stage protocol, query/hit types, typed errors and config schemas: no model code, no I/O."""
