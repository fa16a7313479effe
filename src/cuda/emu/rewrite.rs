//! The source rewrite from CUDA C (`kernels/*.cu`, `*.cuh`) to the C++ that g++ compiles
//! against `cuemu.h`. Most of the dialect is macros in the header; only what a macro
//! cannot express is rewritten here, on tokens (comments and strings are skipped), with
//! every replaced span keeping its newlines so `__LINE__` and g++'s messages still name
//! the original lines:
//!
//! * `__shared__ T name[dims];` → a reference to a per-block heap array
//!   (`cuemu::shared_var`), `extern __shared__ T name[];` → the block's dynamic buffer;
//! * inline PTX `asm("cvt...." : "=f"(out) : "h"(in))` → a call of the matching
//!   `cuemu::ptx_*` conversion (any other instruction is an error naming the line);
//! * `extern "C"` dropped from `__global__` entry points (each file is wrapped in its own
//!   namespace, so helpers copied between files cannot collide at link time), and a
//!   registry of the entry points and of every `*Params` struct's layout appended.

/// One `.cu` file turned into a C++ translation unit.
#[derive(Debug)]
pub struct Unit {
    pub text: String,
    /// The entry points found, in source order.
    #[allow(dead_code)] // for diagnostics
    pub entries: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Ident,
    Punct,
    Str,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    kind: Kind,
    start: usize,
    end: usize,
}

/// Tokens of `src` outside comments and preprocessor directives.
fn lex(src: &str) -> Vec<Tok> {
    let b = src.as_bytes();
    let mut v = Vec::new();
    let (mut i, mut line_start) = (0, true);
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line_start = true;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#' && line_start {
            // A directive, with its backslash continuations.
            while i < b.len() && b[i] != b'\n' {
                if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'\n' {
                    i += 1;
                }
                i += 1;
            }
        } else if src[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if src[i..].starts_with("/*") {
            i = src[i + 2..].find("*/").map_or(b.len(), |j| i + 2 + j + 2);
        } else {
            line_start = false;
            let start = i;
            let kind = if c == b'"' || c == b'\'' {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                Kind::Str
            } else if c.is_ascii_alphabetic() || c == b'_' {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                Kind::Ident
            } else if c.is_ascii_digit() {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                Kind::Other
            } else {
                i += 1;
                Kind::Punct
            };
            v.push(Tok {
                kind,
                start,
                end: i.min(b.len()),
            });
        }
    }
    v
}

struct Ctx<'a> {
    src: &'a str,
    file: &'a str,
    toks: Vec<Tok>,
}

impl Ctx<'_> {
    fn t(&self, i: usize) -> &str {
        self.toks.get(i).map_or("", |t| &self.src[t.start..t.end])
    }
    fn line(&self, i: usize) -> usize {
        let at = self.toks.get(i).map_or(self.src.len(), |t| t.start);
        self.src[..at].matches('\n').count() + 1
    }
    fn err(&self, i: usize, why: &str) -> String {
        format!("{}:{}: {why}", self.file, self.line(i))
    }
    /// Index of the token closing the bracket opened at `open`.
    fn close(&self, open: usize) -> Result<usize, String> {
        let (o, c) = match self.t(open) {
            "(" => ("(", ")"),
            "[" => ("[", "]"),
            _ => ("{", "}"),
        };
        let mut depth = 0;
        for j in open..self.toks.len() {
            if self.t(j) == o {
                depth += 1;
            } else if self.t(j) == c {
                depth -= 1;
                if depth == 0 {
                    return Ok(j);
                }
            }
        }
        Err(self.err(open, "unbalanced brackets"))
    }
    fn find(&self, from: usize, what: &str) -> Result<usize, String> {
        (from..self.toks.len())
            .find(|&j| self.t(j) == what)
            .ok_or_else(|| self.err(from, &format!("expected `{what}`")))
    }
    fn join(&self, from: usize, to: usize) -> String {
        (from..to).map(|j| self.t(j)).collect::<Vec<_>>().join(" ")
    }
}

/// A replacement of the bytes `start..end`; the newlines it removes are appended.
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

fn apply(src: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|e| e.start);
    let mut out = String::with_capacity(src.len() + 1024);
    let mut at = 0;
    for e in edits {
        out.push_str(&src[at..e.start]);
        out.push_str(&e.text);
        out.extend(std::iter::repeat_n(
            '\n',
            src[e.start..e.end].matches('\n').count(),
        ));
        at = e.end;
    }
    out.push_str(&src[at..]);
    out
}

/// The C++ for one inline-PTX statement `asm(...)` spanning tokens `i..=semi`.
fn ptx(cx: &Ctx<'_>, i: usize, open: usize, close: usize) -> Result<String, String> {
    let mut j = open + 1;
    let mut template = String::new();
    while cx.toks.get(j).is_some_and(|t| t.kind == Kind::Str) {
        let s = cx.t(j);
        template.push_str(&s[1..s.len() - 1]);
        j += 1;
    }
    // Operand lists: "constraint" ( expr ), separated by ',' and the sections by ':'.
    let mut operands: Vec<(String, String)> = Vec::new();
    while j < close {
        match cx.t(j) {
            ":" | "," => j += 1,
            _ if cx.toks[j].kind == Kind::Str && cx.t(j + 1) == "(" => {
                let end = cx.close(j + 1)?;
                let c = cx.t(j);
                operands.push((c[1..c.len() - 1].to_string(), cx.join(j + 2, end)));
                j = end + 1;
            }
            _ => return Err(cx.err(i, "inline PTX operand list not understood")),
        }
    }
    let ins = template.trim().trim_end_matches(';').trim();
    if ins.contains(';') {
        return Err(cx.err(i, "inline PTX with several instructions is not modelled"));
    }
    let (mnemonic, args) = ins.split_once(char::is_whitespace).unwrap_or((ins, ""));
    let f = match mnemonic {
        "cvt.f32.f16" => "ptx_cvt_f32_f16",
        "cvt.rn.f16.f32" => "ptx_cvt_rn_f16_f32",
        "cvt.f32.bf16" => "ptx_cvt_f32_bf16",
        "cvt.rn.bf16.f32" => "ptx_cvt_rn_bf16_f32",
        "ex2.approx.f32" | "ex2.approx.ftz.f32" => "ptx_ex2_approx_f32",
        _ => {
            return Err(cx.err(
                i,
                &format!("inline PTX `{ins}` is not modelled by the CPU execution model"),
            ));
        }
    };
    let idx: Vec<usize> = args
        .split(',')
        .map(|a| a.trim().trim_start_matches('%').parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| cx.err(i, &format!("inline PTX operands `{args}` not understood")))?;
    let op = |k: usize| {
        operands
            .get(k)
            .ok_or_else(|| cx.err(i, "inline PTX names a missing operand"))
    };
    if idx.len() != 2 || !op(idx[0])?.0.starts_with('=') {
        return Err(cx.err(i, "inline PTX: expected `dst, src` with an output first"));
    }
    Ok(format!(
        "({}) = ::cuemu::{f}({});",
        op(idx[0])?.1,
        op(idx[1])?.1
    ))
}

/// A `*Params` struct and its field names.
struct ParamStruct {
    name: String,
    fields: Vec<String>,
}

fn param_struct(cx: &Ctx<'_>, open: usize, close: usize) -> Vec<String> {
    let mut fields = Vec::new();
    let mut decl_start = open + 1;
    for j in open + 1..close {
        if cx.t(j) != ";" {
            continue;
        }
        let mut first = true;
        let mut part_start = decl_start;
        for k in decl_start..=j {
            if cx.t(k) == "," || k == j {
                let part: Vec<usize> = (part_start..k)
                    .take_while(|&m| cx.t(m) != "[")
                    .filter(|&m| cx.toks[m].kind == Kind::Ident)
                    .collect();
                let name = if first { part.last() } else { part.first() };
                if let Some(&m) = name {
                    fields.push(cx.t(m).to_string());
                }
                first = false;
                part_start = k + 1;
            }
        }
        decl_start = j + 1;
    }
    fields
}

/// What [`rewrite_body`] makes of one source: the text, the entry points
/// `(name, launch bound)` and the param structs.
type Rewritten = (String, Vec<(String, String)>, Vec<ParamStruct>);

/// Rewrites one source.
fn rewrite_body(file: &str, src: &str) -> Result<Rewritten, String> {
    let cx = Ctx {
        src,
        file,
        toks: lex(src),
    };
    let mut edits = Vec::new();
    let mut entries = Vec::new();
    let mut structs = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < cx.toks.len() {
        match cx.t(i) {
            "{" => depth += 1,
            "}" => depth = depth.saturating_sub(1),
            "struct" if depth == 0 && cx.t(i + 1).ends_with("Params") && cx.t(i + 2) == "{" => {
                let close = cx.close(i + 2)?;
                structs.push(ParamStruct {
                    name: cx.t(i + 1).to_string(),
                    fields: param_struct(&cx, i + 2, close),
                });
                i = close;
                continue;
            }
            "__global__" => {
                if i >= 2 && cx.t(i - 2) == "extern" && cx.t(i - 1) == "\"C\"" {
                    let (s, e) = (cx.toks[i - 2].start, cx.toks[i - 1].end);
                    edits.push(Edit {
                        start: s,
                        end: e,
                        text: String::new(),
                    });
                }
                let mut j = i + 1;
                let mut bound = "1024".to_string();
                while j < cx.toks.len() && cx.t(j + 1) != "(" || cx.t(j) == "__launch_bounds__" {
                    if cx.t(j) == "__launch_bounds__" {
                        let end = cx.close(j + 1)?;
                        bound = cx.join(j + 2, end);
                        j = end;
                    }
                    j += 1;
                }
                if cx.toks.get(j).is_none_or(|t| t.kind != Kind::Ident) {
                    return Err(cx.err(i, "cannot find the name of this __global__ function"));
                }
                entries.push((cx.t(j).to_string(), bound));
                i = j;
            }
            "__shared__" => {
                let mut s = i;
                let dynamic = i >= 1 && cx.t(i - 1) == "extern";
                if dynamic || (i >= 1 && cx.t(i - 1) == "static") {
                    s = i - 1;
                }
                if depth == 0 {
                    return Err(cx.err(i, "file-scope __shared__ is not modelled"));
                }
                let semi = cx.find(i, ";")?;
                let mut ty: Vec<usize> = Vec::new();
                let mut j = i + 1;
                while j < semi {
                    if cx.t(j) == "__align__" {
                        j = cx.close(j + 1)? + 1;
                        continue;
                    }
                    if matches!(cx.t(j), "," | "=") {
                        return Err(cx.err(
                            i,
                            "one __shared__ declaration per statement, without initialiser",
                        ));
                    }
                    ty.push(j);
                    j += 1;
                }
                let bracket = ty.iter().position(|&k| cx.t(k) == "[").unwrap_or(ty.len());
                if bracket < 2 {
                    return Err(cx.err(i, "__shared__ declaration not understood"));
                }
                let name = cx.t(ty[bracket - 1]);
                let base = ty[..bracket - 1]
                    .iter()
                    .map(|&k| cx.t(k))
                    .collect::<Vec<_>>()
                    .join(" ");
                let dims = ty[bracket..]
                    .iter()
                    .map(|&k| cx.t(k))
                    .collect::<Vec<_>>()
                    .join(" ");
                let text = if dynamic {
                    format!(
                        "{base}* {name} = reinterpret_cast<{base}*>(::cuemu::dynamic_shared());"
                    )
                } else {
                    format!(
                        "auto& {name} = ::cuemu::shared_var<{base} {dims}>(\"{file}:{}:{name}\");",
                        cx.line(i)
                    )
                };
                edits.push(Edit {
                    start: cx.toks[s].start,
                    end: cx.toks[semi].end,
                    text,
                });
                i = semi;
            }
            "asm" | "__asm__" => {
                let mut open = i + 1;
                while matches!(cx.t(open), "volatile" | "__volatile__") {
                    open += 1;
                }
                if cx.t(open) == "(" {
                    let close = cx.close(open)?;
                    let semi = cx.find(close, ";")?;
                    edits.push(Edit {
                        start: cx.toks[i].start,
                        end: cx.toks[semi].end,
                        text: ptx(&cx, i, open, close)?,
                    });
                    i = semi;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok((apply(src, edits), entries, structs))
}

/// A header (`kernels/*.cuh`): rewritten in place, included by the units.
pub fn rewrite_header(file: &str, src: &str) -> Result<String, String> {
    let (text, entries, _) = rewrite_body(file, src)?;
    if !entries.is_empty() {
        return Err(format!("{file}: entry points belong in a .cu file"));
    }
    Ok(format!("#line 1 \"{file}\"\n{text}"))
}

/// Param structs declared in a header, for the units that include it.
pub fn header_structs(file: &str, src: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let (_, _, s) = rewrite_body(file, src)?;
    Ok(s.into_iter().map(|p| (p.name, p.fields)).collect())
}

/// A `.cu` file as a translation unit: the header, the rewritten source in namespace
/// `ns`, then the registries. `extra_structs` are the param structs of the headers it
/// includes (file, name, fields).
pub fn rewrite_unit(
    file: &str,
    ns: &str,
    src: &str,
    extra_structs: &[(String, String, Vec<String>)],
) -> Result<Unit, String> {
    let (text, entries, structs) = rewrite_body(file, src)?;
    let mut out =
        format!("#include \"cuemu.h\"\nnamespace {ns} {{\n#line 1 \"{file}\"\n{text}\n}}\n");
    out.push_str("static const ::cuemu::Entry cuemu_entries[] = {\n");
    for (name, bound) in &entries {
        let e = format!("::cuemu::EntryOf<&{ns}::{name}>");
        out.push_str(&format!(
            "  {{\"{name}\", \"{file}\", (unsigned int)({bound}), {e}::nparams, {e}::params, &{e}::call}},\n"
        ));
    }
    out.push_str("};\n");
    out.push_str(&format!(
        "static const int cuemu_entries_registered = ::cuemu::register_entries(cuemu_entries, {});\n",
        entries.len()
    ));
    let all: Vec<(String, String, Vec<String>)> = structs
        .into_iter()
        .map(|p| (file.to_string(), p.name, p.fields))
        .chain(extra_structs.iter().cloned())
        .collect();
    for (k, (_, name, fields)) in all.iter().enumerate() {
        out.push_str(&format!(
            "static const ::cuemu::Field cuemu_fields_{k}[] = {{\n"
        ));
        for f in fields {
            let t = format!("{ns}::{name}");
            out.push_str(&format!(
                "  {{\"{f}\", offsetof({t}, {f}), sizeof({t}::{f}), std::is_floating_point<decltype({t}::{f})>::value}},\n"
            ));
        }
        if fields.is_empty() {
            out.push_str("  {\"\", 0, 0, 0},\n");
        }
        out.push_str("};\n");
    }
    out.push_str("static const ::cuemu::Layout cuemu_layouts[] = {\n");
    for (k, (sfile, name, fields)) in all.iter().enumerate() {
        let t = format!("{ns}::{name}");
        out.push_str(&format!(
            "  {{\"{name}\", \"{sfile}\", sizeof({t}), alignof({t}), {}, cuemu_fields_{k}}},\n",
            fields.len()
        ));
    }
    if all.is_empty() {
        out.push_str("  {\"\", \"\", 0, 0, 0, nullptr},\n");
    }
    out.push_str("};\n");
    out.push_str(&format!(
        "static const int cuemu_layouts_registered = ::cuemu::register_layouts(cuemu_layouts, {});\n",
        all.len()
    ));
    Ok(Unit {
        text: out,
        entries: entries.into_iter().map(|e| e.0).collect(),
    })
}

/// The `#include "..."` names of a source.
pub fn local_includes(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix('#')?.trim_start().strip_prefix("include")?;
            let rest = rest.trim_start().strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_ptx_and_entries_keep_lines() {
        let src = "struct XParams { unsigned int a, b; float c; };\n\
                   extern \"C\" __global__ void __launch_bounds__(64) k(XParams p) {\n\
                   __shared__ float4 s[2][\n 3];\n extern __shared__ float dyn[];\n\
                   float f; unsigned short h = 1;\n\
                   asm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(f) : \"h\"(h));\n\
                   // __shared__ in a comment\n}\n";
        let u = rewrite_unit("kernels/x.cu", "ns_x", src, &[]).unwrap();
        assert_eq!(u.entries, vec!["k"]);
        let start = u.text.find("x.cu\"\n").unwrap() + 6;
        let body = &u.text[start..u.text.find("\n}\nstatic const").unwrap()];
        assert_eq!(body.matches('\n').count(), src.matches('\n').count());
        assert!(body.contains("auto& s = ::cuemu::shared_var<float4 [ 2 ] [ 3 ]>"));
        assert!(body.contains("float* dyn = reinterpret_cast<float*>(::cuemu::dynamic_shared());"));
        assert!(body.contains("(f) = ::cuemu::ptx_cvt_f32_f16(h);"));
        assert!(!body.contains("extern \"C\""));
        assert!(u.text.contains("(unsigned int)(64)"));
        assert!(u.text.contains("offsetof(ns_x::XParams, c)"));
        let bad = "__global__ void k() { asm(\"mov.u32 %0, %%laneid;\" : \"=r\"(x)); }";
        let e = rewrite_unit("kernels/y.cu", "ns", bad, &[]).unwrap_err();
        assert!(e.contains("kernels/y.cu:1") && e.contains("mov.u32"), "{e}");
    }
}
