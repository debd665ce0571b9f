//! The module map of `docs/architecture.md`, checked on the source. Every `use` and every path
//! of `src/` outside test code is an edge from its file to the module it names; a name a
//! module imports or re-exports counts as the module it comes from, and an exported macro as
//! the module that defines it. Two rules hold:
//!
//! - no import cycle: no two files reach each other along those edges. A module using its own
//!   submodules is not an edge (it declares and assembles them; they may use what it defines);
//! - each layer imports only the layers [`LAYERS`] allows it.
//!
//! Test code (`#[cfg(test)]` items and test module files) may use any layer: a test drives its
//! module through the real command line or the real proxy.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Which top-level module may import which other, bottom layer first (`main` is the binary).
/// A new top-level module needs a line here and in `docs/architecture.md`.
const LAYERS: &[(&str, &[&str])] = &[
    ("ratelimit", &[]),
    ("sip", &[]),
    ("config", &["sip"]),
    ("csr", &["sip"]),
    ("dns", &["sip", "config"]),
    ("transport", &["ratelimit", "sip", "config"]),
    ("media", &["ratelimit", "transport"]),
    (
        "proxy",
        &["ratelimit", "sip", "config", "transport", "media", "dns"],
    ),
    ("metrics", &["ratelimit", "sip", "transport", "proxy"]),
    ("hep", &["ratelimit", "sip", "transport"]),
    (
        "server",
        &[
            "sip",
            "config",
            "transport",
            "proxy",
            "metrics",
            "hep",
            "media",
            "dns",
        ],
    ),
    ("cli", &["sip", "config", "csr"]),
    ("main", &["config", "csr", "server", "cli"]),
];

/// A module path below the crate root (`["proxy", "router"]`); the binary is `["main"]`.
type Module = Vec<String>;

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "lib".to_owned()
    } else {
        module.join("/")
    }
}

/// One source file: its module and its text.
struct Source {
    module: Module,
    text: String,
}

/// Every `.rs` file under `src/`.
fn sources(dir: &Path, module: &[String], out: &mut Vec<Source>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 file name")
            .to_owned();
        let mut inner = module.to_vec();
        if path.is_dir() {
            inner.push(stem);
            sources(&path, &inner, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            if !matches!(stem.as_str(), "mod" | "lib") {
                inner.push(stem);
            }
            let text = fs::read_to_string(&path).expect("source file");
            out.push(Source {
                module: inner,
                text,
            });
        }
    }
}

/// The text as tokens: identifiers (with `$crate`), `::`, and single punctuation characters.
/// Comments, string and character literals are dropped.
fn tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' && (at(i + 1) == '\\' || at(i + 2) == '\'') {
            // A character literal (`'x'`, `'\''`, `'\u{…}'`); anything else after `'` is a
            // lifetime or a label.
            i += if at(i + 1) == '\\' { 3 } else { 2 };
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c.is_alphabetic() || c == '_' || (c == '$' && at(i + 1).is_alphabetic()) {
            let start = i;
            i += 1;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let hashes = chars[i..].iter().take_while(|&&h| h == '#').count();
            if matches!(word.as_str(), "r" | "br" | "cr") && at(i + hashes) == '"' {
                // A raw string: r"…", r#"…"#.
                i += hashes + 1;
                let close: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                while i < chars.len() && !chars[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
            } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                // A byte or C string: the literal itself is skipped next round.
            } else if !(word.as_str() == "b" && at(i) == '\'') {
                out.push(word);
            }
        } else if c.is_ascii_digit() {
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push("::".to_owned());
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
            i += 1;
        }
    }
    out
}

/// The tokens without test code: every item under a `#[cfg(test)]` attribute is removed.
/// Returns the names of test modules declared as files (`#[cfg(test)] mod tests;`) too.
fn without_tests(tokens: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut kept = Vec::new();
    let mut test_files = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "#" && tokens.get(i + 1).is_some_and(|t| t == "[") {
            let end = closing(&tokens, i + 1);
            let attribute = &tokens[i + 2..end];
            if attribute.windows(4).any(|w| w == ["cfg", "(", "test", ")"]) {
                let item_end = item_end(&tokens, end + 1);
                let item = &tokens[end + 1..item_end];
                if let Some(at) = item.iter().position(|t| t == "mod") {
                    if item.last().is_some_and(|t| t == ";") {
                        test_files.push(item[at + 1].clone());
                    }
                }
                i = item_end;
                continue;
            }
        }
        kept.push(tokens[i].clone());
        i += 1;
    }
    (kept, test_files)
}

/// The index of the bracket closing the one at `open`.
fn closing(tokens: &[String], open: usize) -> usize {
    let mut depth = 0_usize;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        match token.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// Where the item (or field) starting at `start` ends: after its `;` or its body's `}`, or
/// at the `,` or `}` that ends the list it is part of.
fn item_end(tokens: &[String], start: usize) -> usize {
    let mut i = start;
    while i < tokens.len() {
        match tokens[i].as_str() {
            "#" if tokens.get(i + 1).is_some_and(|t| t == "[") => i = closing(tokens, i + 1) + 1,
            "(" | "[" => i = closing(tokens, i) + 1,
            "{" => return closing(tokens, i) + 1,
            ";" => return i + 1,
            "," | "}" => return i,
            _ => i += 1,
        }
    }
    i
}

/// One path a file names, and the name a `use` binds it to.
struct Named {
    path: Vec<String>,
    alias: Option<String>,
}

/// Every path of `use` declarations and, outside them, every path starting with a word in
/// `roots` (`crate`, `super`, `self`, child modules).
fn named_paths(tokens: &[String], roots: &dyn Fn(&str) -> bool) -> Vec<Named> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let after_path = i > 0 && tokens[i - 1] == "::";
        if tokens[i] == "use" && !after_path {
            let mut pos = i + 1;
            let mut trees = Vec::new();
            use_tree(tokens, &mut pos, &mut Vec::new(), &mut trees);
            out.extend(trees.into_iter().map(|(path, alias)| Named { path, alias }));
            i = pos;
            continue;
        }
        if !after_path && roots(&tokens[i]) && tokens.get(i + 1).is_some_and(|t| t == "::") {
            let mut path = vec![tokens[i].clone()];
            i += 1;
            while tokens.get(i).is_some_and(|t| t == "::")
                && tokens.get(i + 1).is_some_and(|t| is_word(t))
            {
                path.push(tokens[i + 1].clone());
                i += 2;
            }
            out.push(Named { path, alias: None });
            continue;
        }
        i += 1;
    }
    out
}

fn is_word(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
}

/// A use tree (`a::b::{c, d::e as f, *}`) as its paths and the names they are bound to.
fn use_tree(
    tokens: &[String],
    pos: &mut usize,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    while let Some(token) = tokens.get(*pos) {
        match token.as_str() {
            "{" => {
                *pos += 1;
                while tokens.get(*pos).is_some_and(|t| t != "}") {
                    use_tree(tokens, pos, &mut prefix.clone(), out);
                    if tokens.get(*pos).is_some_and(|t| t == ",") {
                        *pos += 1;
                    }
                }
                *pos += 1;
                return;
            }
            "*" => {
                *pos += 1;
                out.push((prefix.clone(), None));
                return;
            }
            word if is_word(word) => {
                prefix.push(word.to_owned());
                *pos += 1;
                if tokens.get(*pos).is_some_and(|t| t == "::") {
                    *pos += 1;
                    continue;
                }
                let mut alias = prefix.iter().rev().find(|s| *s != "self").cloned();
                if tokens.get(*pos).is_some_and(|t| t == "as") {
                    alias = tokens.get(*pos + 1).cloned();
                    *pos += 2;
                }
                out.push((prefix.clone(), alias));
                return;
            }
            _ => {
                *pos += 1;
                return;
            }
        }
    }
}

/// The module graph of a crate: nodes are files, edges the imports between them.
struct Graph {
    edges: BTreeMap<Module, BTreeSet<Module>>,
}

impl Graph {
    fn of(sources: &[Source]) -> Graph {
        let modules: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
        let mut test_modules = BTreeSet::new();
        let mut files = Vec::new();
        for source in sources {
            let (kept, tests) = without_tests(tokens(&source.text));
            for test in tests {
                let mut module = source.module.clone();
                module.push(test);
                test_modules.insert(module);
            }
            files.push((source, kept));
        }
        let is_test =
            |module: &Module| (1..=module.len()).any(|n| test_modules.contains(&module[..n]));
        // Names bound by `use` (and exported macros), to the path they stand for.
        let mut aliases: BTreeMap<(Module, String), (Module, Vec<String>)> = BTreeMap::new();
        let mut named = Vec::new();
        for (source, kept) in &files {
            if is_test(&source.module) {
                continue;
            }
            let module = &source.module;
            let child = |word: &str| {
                let mut inner = module.clone();
                inner.push(word.to_owned());
                modules.contains(&inner)
            };
            // The binary (`main.rs`) names the library `roundabout`.
            let roots = |word: &str| {
                matches!(word, "crate" | "super" | "self" | "$crate" | "roundabout") || child(word)
            };
            let paths = named_paths(kept, &roots);
            for (i, window) in kept.windows(3).enumerate() {
                if window[0] == "macro_rules" && window[1] == "!" {
                    let exported = kept[..i].ends_with(&[
                        "#".to_owned(),
                        "[".to_owned(),
                        "macro_export".to_owned(),
                        "]".to_owned(),
                    ]);
                    if exported {
                        aliases.insert((Vec::new(), window[2].clone()), (module.clone(), vec![]));
                    }
                }
            }
            for path in &paths {
                if let Some(alias) = &path.alias {
                    aliases.insert(
                        (module.clone(), alias.clone()),
                        (module.clone(), path.path.clone()),
                    );
                }
            }
            named.push((module.clone(), paths));
        }
        let resolver = Resolver {
            modules: &modules,
            aliases: &aliases,
        };
        let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (module, paths) in named {
            let targets = edges.entry(module.clone()).or_default();
            for path in paths {
                let Some(target) = resolver.resolve(&module, &path.path, 0) else {
                    continue;
                };
                let own_submodule = target.starts_with(&module);
                if !(target.is_empty() || own_submodule || is_test(&target)) {
                    targets.insert(target);
                }
            }
        }
        Graph { edges }
    }

    /// Every set of two or more files that reach each other (Tarjan's strongly connected
    /// components).
    fn cycles(&self) -> Vec<Vec<Module>> {
        struct Search<'g> {
            graph: &'g Graph,
            index: BTreeMap<&'g Module, usize>,
            low: BTreeMap<&'g Module, usize>,
            stack: Vec<&'g Module>,
            found: Vec<Vec<Module>>,
        }
        impl<'g> Search<'g> {
            fn visit(&mut self, node: &'g Module) {
                let n = self.index.len();
                self.index.insert(node, n);
                self.low.insert(node, n);
                self.stack.push(node);
                for next in self.graph.edges.get(node).into_iter().flatten() {
                    if !self.index.contains_key(next) {
                        self.visit(next);
                        let low = self.low[node].min(self.low[next]);
                        self.low.insert(node, low);
                    } else if self.stack.contains(&next) {
                        let low = self.low[node].min(self.index[next]);
                        self.low.insert(node, low);
                    }
                }
                if self.low[node] == self.index[node] {
                    let at = self
                        .stack
                        .iter()
                        .rposition(|m| *m == node)
                        .expect("on the stack");
                    let component: Vec<Module> = self.stack.drain(at..).cloned().collect();
                    if component.len() > 1 {
                        self.found.push(component);
                    }
                }
            }
        }
        let mut search = Search {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            found: Vec::new(),
        };
        for node in self.edges.keys() {
            if !search.index.contains_key(node) {
                search.visit(node);
            }
        }
        search.found
    }

    fn has_edge(&self, from: &str, to: &str) -> bool {
        self.edges
            .iter()
            .any(|(m, targets)| name(m) == from && targets.iter().any(|t| name(t) == to))
    }
}

struct Resolver<'a> {
    modules: &'a BTreeSet<Module>,
    aliases: &'a BTreeMap<(Module, String), (Module, Vec<String>)>,
}

impl Resolver<'_> {
    /// The module a path written in `from` names: as deep as the path goes through modules,
    /// and through re-exports to where a name is defined. `None` for other crates.
    fn resolve(&self, from: &Module, path: &[String], depth: usize) -> Option<Module> {
        let (mut at, rest) = match path.first()?.as_str() {
            "crate" | "$crate" | "roundabout" => (Vec::new(), &path[1..]),
            "self" => (from.clone(), &path[1..]),
            "super" => {
                let supers = path.iter().take_while(|s| *s == "super").count();
                let at = from[..from.len().checked_sub(supers)?].to_vec();
                (at, &path[supers..])
            }
            first => {
                // A child module's name, else another crate.
                let mut child = from.clone();
                child.push(first.to_owned());
                if !self.modules.contains(&child) {
                    return None;
                }
                (from.clone(), path)
            }
        };
        for segment in rest.iter().filter(|s| *s != "self") {
            let mut inner = at.clone();
            inner.push(segment.clone());
            if self.modules.contains(&inner) {
                at = inner;
                continue;
            }
            if let Some((declared_in, target)) = self.aliases.get(&(at.clone(), segment.clone())) {
                if depth < 8 {
                    if target.is_empty() {
                        return Some(declared_in.clone());
                    }
                    return self.resolve(declared_in, target, depth + 1);
                }
            }
            break;
        }
        Some(at)
    }
}

fn crate_graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    sources(&root, &[], &mut all);
    Graph::of(&all)
}

fn top(module: &Module) -> &str {
    module.first().map_or("lib", String::as_str)
}

#[test]
fn no_import_cycles_in_src() {
    let graph = crate_graph();
    let cycles: Vec<String> = graph
        .cycles()
        .iter()
        .map(|component| {
            let members: BTreeSet<&Module> = component.iter().collect();
            let edges: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    graph.edges[from]
                        .iter()
                        .filter(|to| members.contains(to))
                        .map(move |to| format!("{} -> {}", name(from), name(to)))
                })
                .collect();
            edges.join(", ")
        })
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn each_layer_imports_only_the_layers_below_it() {
    let graph = crate_graph();
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    // The crate root only declares the layers.
    for (from, targets) in graph.edges.iter().filter(|(m, _)| !m.is_empty()) {
        let layer = top(from);
        let Some(may) = allowed.get(layer) else {
            wrong.push(format!("{}: layer {layer} is not in LAYERS", name(from)));
            continue;
        };
        for to in targets {
            if top(to) != layer && !may.contains(&top(to)) {
                wrong.push(format!("{} -> {}", name(from), name(to)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

/// The check is only as good as the parser: these edges exist, through `use` trees, inline
/// paths, `super::`, a child module, re-exports and an exported macro.
#[test]
fn the_graph_sees_known_imports() {
    let graph = crate_graph();
    for (from, to) in [
        ("proxy/handler", "proxy/router"),
        ("server", "proxy/handler"),
        ("sip/uri", "sip/lex"),
        ("sip/header", "sip"),
        ("dns/order", "sip/uri"),
        ("transport/udp", "transport"),
        ("transport/tcp", "transport/stream"),
        ("proxy/clients", "ratelimit"),
        ("main", "server"),
        ("main", "cli"),
    ] {
        assert!(graph.has_edge(from, to), "{from} -> {to} not seen");
    }
    let test_files: Vec<String> = graph
        .edges
        .keys()
        .map(|m| name(m))
        .filter(|m| m.ends_with("tests"))
        .collect();
    assert!(
        test_files.is_empty(),
        "test modules in the graph: {test_files:?}"
    );
}

#[test]
fn a_cycle_is_found_and_a_module_may_use_its_own_submodules() {
    let source = |module: &[&str], text: &str| Source {
        module: module.iter().map(|s| (*s).to_owned()).collect(),
        text: text.to_owned(),
    };
    let graph = Graph::of(&[
        source(&["a"], "mod x; pub use x::Thing; fn f() { x::g(); }"),
        source(&["a", "x"], "use super::Shared; pub struct Thing;"),
        source(&["b"], "use crate::a::Thing;"),
        source(&["c"], "use crate::b::{self, *}; // use crate::d;\n"),
        source(&["d"], "pub fn f() -> &'static str { \"crate::e\" }"),
        source(&["e"], "#[cfg(test)]\nmod tests { use crate::d; }"),
    ]);
    assert!(graph.has_edge("b", "a/x"), "a re-export is its definition");
    assert!(graph.has_edge("a/x", "a"));
    assert!(
        !graph.has_edge("a", "a/x"),
        "a module assembles its submodules"
    );
    assert!(graph.has_edge("c", "b"));
    assert!(!graph.has_edge("c", "d"), "comments are not imports");
    assert!(!graph.has_edge("d", "e"), "strings are not imports");
    assert!(!graph.has_edge("e", "d"), "test code is not an import");
    assert!(graph.cycles().is_empty());
    let graph = Graph::of(&[
        source(&["c"], "use crate::d::f;"),
        source(&["d"], "fn g() { crate::c::h(); }"),
    ]);
    assert_eq!(graph.cycles().len(), 1);
}
