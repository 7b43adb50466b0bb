//! [`Names`]: the Redis key names of one namespace, each starting with the namespace as
//! a hash tag, `{ns}:`.

use cert_core::{Error, Result};

use crate::error::BACKEND;

/// The Redis key names of one namespace.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub(crate) namespace: String,
    /// `{ns}:v:`, followed by a storage key: the string holding that key's value.
    pub(crate) value_prefix: String,
    /// `{ns}:index`: the sorted set of every storage key holding a value.
    pub(crate) index: String,
    /// `{ns}:modified`: the hash of every value's modification time, by storage key.
    pub(crate) modified: String,
    /// `{ns}:lock:`, followed by a lock name: the string holding the lock's token.
    lock_prefix: String,
}

impl Names {
    pub(crate) fn new(namespace: &str) -> Result<Self> {
        if namespace.is_empty()
            || namespace.contains(['{', '}'])
            || namespace.chars().any(char::is_control)
        {
            return Err(Error::backend(
                BACKEND,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "invalid namespace {namespace:?}: it must be non-empty, without braces or control characters"
                    ),
                ),
            ));
        }
        let tag = format!("{{{namespace}}}:");
        Ok(Names {
            namespace: namespace.to_owned(),
            value_prefix: format!("{tag}v:"),
            index: format!("{tag}index"),
            modified: format!("{tag}modified"),
            lock_prefix: format!("{tag}lock:"),
        })
    }

    pub(crate) fn value(&self, key: &str) -> String {
        let mut name = String::with_capacity(self.value_prefix.len() + key.len());
        name.push_str(&self.value_prefix);
        name.push_str(key);
        name
    }

    pub(crate) fn lock(&self, name: &str) -> String {
        format!("{}{name}", self.lock_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_hash_tag() {
        let names = Names::new("ns_1").unwrap();
        assert_eq!(names.value("a/b"), "{ns_1}:v:a/b");
        assert_eq!(names.index, "{ns_1}:index");
        assert_eq!(names.modified, "{ns_1}:modified");
        assert_eq!(names.lock("issue/x"), "{ns_1}:lock:issue/x");
        for bad in ["", "a{b", "a}b", "a\nb"] {
            assert!(Names::new(bad).is_err(), "{bad:?}");
        }
    }
}
