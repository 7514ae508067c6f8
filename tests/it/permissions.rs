//! The table of AWS operations (src/provider/aws/permissions.rs) is the code's own: every SDK
//! call in the AWS provider, the lease and signed delivery has its entry, and every entry is a
//! call the code makes. The source is parsed, not grepped, and directories are walked whole,
//! so moving a call to another file keeps it covered.

use stackwarden::provider::aws::permissions::{OPERATIONS, Service};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// Where stackwarden calls AWS.
const SOURCES: [&str; 3] = ["src/provider/aws", "src/reconcile/lease.rs", "src/source"];

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).expect("read source dir") {
        out.extend(rust_files(&entry.expect("dir entry").path()));
    }
    out.retain(|p| p.extension().is_some_and(|e| e == "rs"));
    out
}

/// One SDK call found in the source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Found {
    /// The client's field or variable name where it says which service (`self.ec2`).
    client: String,
    /// The operation's method name.
    call: String,
    /// Where it is.
    at: String,
}

/// Finds, for every `.send()`, the operation at the root of its builder chain: the method
/// called on the client, following `let req = client.op()…; … req.send()` through the
/// function's bindings.
struct Calls<'a> {
    file: &'a str,
    bindings: HashMap<String, Vec<syn::Expr>>,
    found: Vec<Found>,
}

impl Calls<'_> {
    /// The root call of the chain `expr` belongs to, if it is one.
    fn root(&self, expr: &syn::Expr, depth: u32) -> Option<(String, String)> {
        if depth > 64 {
            return None;
        }
        match expr {
            syn::Expr::MethodCall(m) => match &*m.receiver {
                syn::Expr::MethodCall(_) => self.root(&m.receiver, depth + 1),
                syn::Expr::Path(p) if p.path.segments.len() == 1 => {
                    let name = p.path.segments[0].ident.to_string();
                    // A builder held in a variable: follow the binding.
                    let bound = self.bindings.get(&name).into_iter().flatten();
                    for init in bound {
                        if let Some(r) = self.root(init, depth + 1) {
                            return Some(r);
                        }
                    }
                    Some((name, m.method.to_string()))
                }
                syn::Expr::Field(f) => {
                    let member = match &f.member {
                        syn::Member::Named(i) => i.to_string(),
                        syn::Member::Unnamed(_) => String::new(),
                    };
                    Some((member, m.method.to_string()))
                }
                other => self
                    .root(other, depth + 1)
                    .or_else(|| Some((String::new(), m.method.to_string()))),
            },
            syn::Expr::Path(p) if p.path.segments.len() == 1 => {
                let name = p.path.segments[0].ident.to_string();
                self.bindings
                    .get(&name)
                    .into_iter()
                    .flatten()
                    .find_map(|init| self.root(init, depth + 1))
            }
            syn::Expr::Paren(p) => self.root(&p.expr, depth + 1),
            syn::Expr::Reference(r) => self.root(&r.expr, depth + 1),
            syn::Expr::Match(m) => m.arms.iter().find_map(|a| self.root(&a.body, depth + 1)),
            syn::Expr::If(i) => i.then_branch.stmts.iter().find_map(|s| match s {
                syn::Stmt::Expr(e, _) => self.root(e, depth + 1),
                _ => None,
            }),
            _ => None,
        }
    }
}

impl<'ast> Visit<'ast> for Calls<'_> {
    fn visit_local(&mut self, local: &'ast syn::Local) {
        let mut pat = &local.pat;
        if let syn::Pat::Type(t) = pat {
            pat = &t.pat;
        }
        if let (syn::Pat::Ident(i), Some(init)) = (pat, &local.init) {
            self.bindings
                .entry(i.ident.to_string())
                .or_default()
                .push((*init.expr).clone());
        }
        syn::visit::visit_local(self, local);
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        let saved = std::mem::take(&mut self.bindings);
        syn::visit::visit_item_fn(self, f);
        self.bindings = saved;
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        let saved = std::mem::take(&mut self.bindings);
        syn::visit::visit_impl_item_fn(self, f);
        self.bindings = saved;
    }

    // Calls inside `tokio::join!(…)` and the like: a macro's body is tokens to syn, so it is
    // parsed here as the list of expressions such macros take.
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        use syn::punctuated::Punctuated;
        if let Ok(args) =
            mac.parse_body_with(Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated)
        {
            for e in &args {
                self.visit_expr(e);
            }
        }
        syn::visit::visit_macro(self, mac);
    }

    fn visit_expr_method_call(&mut self, m: &'ast syn::ExprMethodCall) {
        if m.method == "send" && m.args.is_empty() {
            match self.root(&m.receiver, 0) {
                Some((client, call)) => self.found.push(Found {
                    client,
                    call,
                    at: self.file.to_string(),
                }),
                None => panic!(
                    "{}: a `.send()` whose operation cannot be told from the source (after `.{}()`)",
                    self.file,
                    match &*m.receiver {
                        syn::Expr::MethodCall(r) => r.method.to_string(),
                        _ => String::new(),
                    }
                ),
            }
        }
        syn::visit::visit_expr_method_call(self, m);
    }
}

/// Every SDK call in the sources.
fn calls_in_source() -> Vec<Found> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for source in SOURCES {
        let files = rust_files(&root.join(source));
        assert!(!files.is_empty(), "{source} has no Rust files");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            let ast = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("{}: does not parse: {e}", file.display()));
            let rel = file
                .strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string();
            let mut v = Calls {
                file: &rel,
                bindings: HashMap::new(),
                found: Vec::new(),
            };
            v.visit_file(&ast);
            found.extend(v.found);
        }
    }
    found
}

/// The service a call is made on: by the client's name when the code names it (`self.ec2`),
/// else by the file's place (`ec2/`, `ssm.rs`; the lease is S3's).
fn service_of(found: &Found) -> Option<Service> {
    let all = [
        Service::Ec2,
        Service::Elbv2,
        Service::S3,
        Service::Ssm,
        Service::Iam,
        Service::Sts,
    ];
    if let Some(s) = all.iter().find(|s| s.client_name() == found.client) {
        return Some(*s);
    }
    if found.at.ends_with("lease.rs") {
        return Some(Service::S3);
    }
    let path = found.at.trim_start_matches("src/provider/aws/");
    all.iter()
        .find(|s| {
            let name = s.client_name();
            path.starts_with(&format!("{name}/")) || path.starts_with(&format!("{name}.rs"))
        })
        .copied()
}

#[test]
fn every_aws_call_in_the_source_is_in_the_permissions_table() {
    let found = calls_in_source();
    assert!(
        found.len() > 50,
        "only {} SDK calls found: the scan is broken",
        found.len()
    );
    let table: BTreeSet<(Service, &str)> = OPERATIONS.iter().map(|o| (o.service, o.call)).collect();
    let mut missing = Vec::new();
    for f in &found {
        match service_of(f) {
            Some(s) if table.contains(&(s, f.call.as_str())) => {}
            Some(s) => missing.push(format!("{}: {s:?} {}", f.at, f.call)),
            None => missing.push(format!(
                "{}: {} (on `{}`: name the client after its service)",
                f.at, f.call, f.client
            )),
        }
    }
    assert!(
        missing.is_empty(),
        "AWS calls without an entry in src/provider/aws/permissions.rs OPERATIONS (add one, with its IAM action, step and resource):\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_entry_of_the_permissions_table_is_a_call_the_code_makes() {
    let found = calls_in_source();
    let mut made: BTreeMap<(Service, String), usize> = BTreeMap::new();
    for f in &found {
        if let Some(s) = service_of(f) {
            *made.entry((s, f.call.clone())).or_default() += 1;
        }
    }
    let unused: Vec<String> = OPERATIONS
        .iter()
        .filter(|o| !made.contains_key(&(o.service, o.call.to_string())))
        .map(|o| format!("{:?} {} ({})", o.service, o.call, o.action))
        .collect();
    assert!(
        unused.is_empty(),
        "entries no code calls (a policy must not grant them): {unused:?}"
    );
}
