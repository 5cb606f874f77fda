//! The module graph of every crate has no cycle: a module never imports,
//! directly or through others, a module that imports it. Handlers import the
//! state they take, never the module that wires them into the router; the
//! live-feed engine never imports the HTTP layer above it.
//!
//! "Imports" means every `use` and every path that names another module of
//! the same crate (`crate::x::y`, `super::z`), outside inline test modules,
//! including paths inside macro invocations (`gauge!(crate::metrics::X)`).
//! A `mod` declaration is not an import: declaring a child is how a parent
//! owns it. Names re-exported by `lib.rs` count as imports of the module
//! they come from.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

type Module = Vec<String>;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every module of a crate that has a file, by its path from the root.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, prefix: &Module, found: &mut BTreeMap<Module, PathBuf>) {
        for entry in fs::read_dir(dir).expect("readable directory") {
            let path = entry.expect("entry").path();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            if path.is_dir() {
                let mut next = prefix.clone();
                next.push(stem);
                walk(&path, &next, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                // A binary's `main.rs` is a crate of its own, not a module.
                if prefix.is_empty() && stem == "main" {
                    continue;
                }
                let mut module = prefix.clone();
                if stem != "mod" && !(prefix.is_empty() && stem == "lib") {
                    module.push(stem);
                }
                found.insert(module, path);
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(src, &Vec::new(), &mut found);
    found
}

/// The paths one file names, made absolute from the crate root.
struct Paths<'a> {
    here: &'a Module,
    modules: &'a BTreeMap<Module, PathBuf>,
    found: Vec<Module>,
}

impl Paths<'_> {
    fn absolute(&self, segments: &[String]) -> Option<Module> {
        let first = segments.first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.here.clone(),
            "super" => {
                let mut base = self.here.clone();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                return Some(base);
            }
            // A path from a child module (`use config::X` in lib.rs).
            child => {
                let mut base = self.here.clone();
                base.push(child.to_owned());
                if !self.modules.contains_key(&base) {
                    return None;
                }
                base.extend(segments[1..].iter().cloned());
                return Some(base);
            }
        };
        base.extend(segments[1..].iter().cloned());
        Some(base)
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => self.push_with(prefix, &name.ident.to_string()),
            syn::UseTree::Rename(rename) => self.push_with(prefix, &rename.ident.to_string()),
            syn::UseTree::Glob(_) => self.push_with(prefix, "*"),
            syn::UseTree::Group(group) => {
                for item in &group.items {
                    self.use_tree(prefix, item);
                }
            }
        }
    }

    fn push_with(&mut self, prefix: &[String], last: &str) {
        let mut segments = prefix.to_vec();
        if last != "self" {
            segments.push(last.to_owned());
        }
        if let Some(path) = self.absolute(&segments) {
            self.found.push(path);
        }
    }

    /// The paths in a macro's arguments, which syn leaves as unparsed
    /// tokens: every run `a::b::c` of identifiers, in nested groups too.
    fn macro_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let punct = |i: usize, c: char| matches!(&tokens[i], TokenTree::Punct(p) if p.as_char() == c);
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(group) => self.macro_tokens(group.stream()),
                // Not a path's start: a field or method after `.`, a
                // metavariable after `$` (but `$crate` is the crate), or the
                // rest of a path after `::` (`::std::x`, `Vec::<T>::new`).
                TokenTree::Ident(_) if i >= 1 && punct(i - 1, '.') => {}
                TokenTree::Ident(ident) if i >= 1 && punct(i - 1, '$') && ident != "crate" => {}
                TokenTree::Ident(_) if i >= 2 && punct(i - 1, ':') && punct(i - 2, ':') => {}
                TokenTree::Ident(ident) => {
                    let mut segments = vec![ident.to_string()];
                    while let [TokenTree::Punct(a), TokenTree::Punct(b), TokenTree::Ident(next), ..] =
                        &tokens[i + 1..]
                        && a.as_char() == ':'
                        && b.as_char() == ':'
                    {
                        segments.push(next.to_string());
                        i += 3;
                    }
                    if let Some(path) = self.absolute(&segments) {
                        self.found.push(path);
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Paths<'_> {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(path) = self.absolute(&segments) {
            self.found.push(path);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.macro_tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }

    fn visit_visibility(&mut self, visibility: &'ast syn::Visibility) {
        // `pub(super)` names who may see an item, not something it uses.
        let _ = visibility;
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        // Inline modules are tests here; their `super` is this file.
        let _ = item;
    }
}

/// The module a path lands in: its longest prefix that is a module with a
/// file, with names re-exported by the crate root followed to their source.
fn resolve(
    path: &Module,
    modules: &BTreeMap<Module, PathBuf>,
    reexports: &BTreeMap<String, Module>,
) -> Module {
    if let Some(first) = path.first()
        && !modules.contains_key(&vec![first.clone()])
        && let Some(source) = reexports.get(first)
    {
        let mut full = source.clone();
        full.extend(path[1..].iter().cloned());
        return resolve(&full, modules, reexports);
    }
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| modules.contains_key(m)).unwrap_or_default()
}

fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules = modules(src);
    let paths_of = |module: &Module| {
        let text = fs::read_to_string(&modules[module]).expect("utf-8 source");
        let file = syn::parse_file(&text).expect("the source parses");
        let mut paths = Paths { here: module, modules: &modules, found: Vec::new() };
        paths.visit_file(&file);
        paths.found
    };
    // `pub use x::Name` in lib.rs: `crate::Name` means module `x`.
    let root: Module = Vec::new();
    let mut reexports = BTreeMap::new();
    if modules.contains_key(&root) {
        for path in paths_of(&root) {
            if let Some(name) = path.last() {
                reexports.insert(name.clone(), path[..path.len() - 1].to_vec());
            }
        }
    }
    let mut edges = BTreeMap::new();
    for module in modules.keys().filter(|m| !m.is_empty()) {
        let targets: BTreeSet<Module> = paths_of(module)
            .iter()
            .map(|path| resolve(path, &modules, &reexports))
            .filter(|target| target != module && !target.is_empty())
            .collect();
        edges.insert(module.clone(), targets);
    }
    edges
}

/// One cycle, if there is any.
fn find_cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, bool>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(node.clone(), false);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(false) => {
                    let start = stack.iter().position(|m| m == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(true) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.clone(), true);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if !state.contains_key(node)
            && let Some(cycle) = visit(node, edges, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn no_crate_has_an_import_cycle_among_its_modules() {
    let crates = fs::read_dir(workspace_root().join("crates")).expect("crates/");
    let mut checked = 0;
    for entry in crates {
        let src = entry.expect("entry").path().join("src");
        if !src.is_dir() {
            continue;
        }
        let edges = graph(&src);
        if let Some(cycle) = find_cycle(&edges) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!("import cycle in {}: {}", src.display(), names.join(" -> "));
        }
        checked += edges.len();
    }
    assert!(checked > 50, "expected the workspace's modules, checked {checked}");
}

#[test]
fn the_checker_finds_a_cycle_it_is_shown() {
    let dir = std::env::temp_dir().join(format!("courtside-modules-{}", std::process::id()));
    fs::create_dir_all(dir.join("live")).expect("temp dir");
    fs::write(dir.join("lib.rs"), "pub mod live;\npub mod state;\npub use state::AppState;\n")
        .expect("write");
    fs::write(dir.join("state.rs"), "use crate::live::subscription::Feed;\npub struct AppState(Feed);\n")
        .expect("write");
    fs::write(dir.join("live/mod.rs"), "pub mod subscription;\n").expect("write");
    fs::write(dir.join("live/subscription.rs"), "pub struct Feed;\nfn f(_: crate::AppState) {}\n")
        .expect("write");
    let cycle = find_cycle(&graph(&dir)).map(|c| c.iter().map(|m| m.join("::")).collect::<Vec<_>>());
    fs::remove_dir_all(&dir).expect("cleanup");
    let cycle = cycle.expect("the cycle is found");
    assert!(
        cycle.contains(&"state".to_owned()) && cycle.contains(&"live::subscription".to_owned()),
        "{cycle:?}"
    );
}

#[test]
fn a_restricted_visibility_is_not_an_import() {
    let dir = std::env::temp_dir().join(format!("courtside-visibility-{}", std::process::id()));
    fs::create_dir_all(dir.join("worker")).expect("temp dir");
    fs::write(dir.join("lib.rs"), "pub mod worker;\n").expect("write");
    fs::write(dir.join("worker.rs"), "mod balance;\npub fn call() { balance::pick(); }\n").expect("write");
    fs::write(dir.join("worker/balance.rs"), "pub(super) fn pick() {}\n").expect("write");
    let edges = graph(&dir);
    fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(find_cycle(&edges), None, "{edges:?}");
    let worker = vec!["worker".to_owned()];
    assert!(edges[&worker].contains(&vec!["worker".to_owned(), "balance".to_owned()]), "{edges:?}");
}

#[test]
fn a_path_inside_a_macro_is_an_import() {
    let dir = std::env::temp_dir().join(format!("courtside-macro-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    fs::write(dir.join("lib.rs"), "pub mod limits;\npub mod metrics;\n").expect("write");
    // Nested in a group, as in `gauge!(...)` inside a block.
    fs::write(dir.join("limits.rs"), "pub struct Lane;\nfn f() { g!({ [crate::metrics::TRACKED] }); }\n")
        .expect("write");
    fs::write(dir.join("metrics.rs"), "pub const TRACKED: &str = \"t\";\nfn f(_: crate::limits::Lane) {}\n")
        .expect("write");
    let cycle = find_cycle(&graph(&dir));
    fs::remove_dir_all(&dir).expect("cleanup");
    assert!(cycle.is_some_and(|c| c.len() == 3), "the cycle through the macro is found");
}
