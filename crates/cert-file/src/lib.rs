//! File system storage for certstore.
