//! Backends by URL scheme: the lookup every registry (store, objects) shares, as
//! Quickwit's `StorageResolver` maps a URI's scheme to a pre-registered factory. The
//! factory trait stays each crate's own; this keeps the list, the order and the message
//! for an unknown scheme in one place.

use std::sync::Arc;

/// What a registry needs to know of a factory.
pub trait Schemes {
    /// The URL schemes it opens.
    fn schemes(&self) -> &'static [&'static str];
    /// A one-line description of the accepted URLs, for error messages and docs.
    fn usage(&self) -> &'static str;
}

/// Factories by scheme; a later registration of a scheme wins.
pub struct SchemeRegistry<F: ?Sized> {
    factories: Vec<Arc<F>>,
}

impl<F: ?Sized> Default for SchemeRegistry<F> {
    fn default() -> Self {
        Self {
            factories: Vec::new(),
        }
    }
}

impl<F: ?Sized> Clone for SchemeRegistry<F> {
    fn clone(&self) -> Self {
        Self {
            factories: self.factories.clone(),
        }
    }
}

impl<F: ?Sized + Schemes> SchemeRegistry<F> {
    /// Adds a factory, ahead of those registered before.
    pub fn register(&mut self, factory: Arc<F>) {
        self.factories.insert(0, factory);
    }

    /// Every scheme that can be opened, sorted.
    pub fn schemes(&self) -> Vec<&'static str> {
        let mut schemes: Vec<_> = self
            .factories
            .iter()
            .flat_map(|f| f.schemes().iter().copied())
            .collect();
        schemes.sort_unstable();
        schemes.dedup();
        schemes
    }

    /// The factory of `scheme`, or (as the error) the usage of every registered one, in
    /// registration order, for a message naming what is supported.
    pub fn find(&self, scheme: &str) -> Result<&Arc<F>, String> {
        self.factories
            .iter()
            .find(|f| f.schemes().contains(&scheme))
            .ok_or_else(|| {
                let usages: Vec<_> = self.factories.iter().rev().map(|f| f.usage()).collect();
                usages.join("; ")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static [&'static str], &'static str);

    impl Schemes for Named {
        fn schemes(&self) -> &'static [&'static str] {
            self.0
        }
        fn usage(&self) -> &'static str {
            self.1
        }
    }

    #[test]
    fn later_registrations_win_and_unknown_schemes_list_the_usages() {
        let mut registry = SchemeRegistry::default();
        registry.register(Arc::new(Named(&["a", "alias"], "a://…")));
        registry.register(Arc::new(Named(&["b"], "b://…")));
        registry.register(Arc::new(Named(&["a"], "a2://…")));
        assert_eq!(registry.schemes(), vec!["a", "alias", "b"]);
        assert_eq!(registry.find("a").map(|f| f.1), Ok("a2://…"));
        assert_eq!(registry.find("alias").map(|f| f.1), Ok("a://…"));
        assert_eq!(
            registry.find("c").map(|f| f.1),
            Err("a://…; b://…; a2://…".into())
        );
    }
}
