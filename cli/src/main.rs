//! `mcp-mesh-auth`: the policy workflow of the filter — a Cedar schema for its entity model,
//! validation, policy tests for CI, and explanations of single decisions. Decisions are taken by
//! the filter crate itself, so the CLI and the filter in Envoy cannot disagree.

mod decide;
mod policies;
mod schema;
mod tools;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcp_mesh_auth_filter::authz::{parse_policies, parse_schema, validate, CedarConfigError};
use serde_json::{json, Map, Value};

use crate::decide::ServerTools;
use crate::policies::{parse_document, read, PolicySource};
use crate::schema::{Attribute, CedarType, SchemaInput};

/// Why the CLI could not do what it was asked; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Input(String),
    #[error("MCP server: {0}")]
    Server(String),
    #[error("the generated schema is refused by Cedar: {0}")]
    Schema(String),
    #[error("the policies are refused: {0}")]
    Policies(String),
    #[error("{0}")]
    Cedar(#[from] CedarConfigError),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

#[derive(Parser)]
#[command(
    name = "mcp-mesh-auth",
    version,
    about = "Cedar policies for mcp-mesh-auth: schema, validate, test, explain"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a Cedar schema of the filter's entity model, with the claims and tool arguments
    /// policies may read.
    Schema(SchemaArgs),
    /// Validate policies against a schema (Cedar strict validation); exit 1 when one fails.
    Validate {
        #[command(flatten)]
        source: PolicySource,
    },
    /// Run a YAML file of cases (claims + request → allow/deny); exit 1 when one fails.
    Test {
        #[command(flatten)]
        source: PolicySource,
        /// The case file: `cases: [{name, claims | token, request, expect: allow|deny, policies?,
        /// listed?}]`.
        cases: PathBuf,
        /// A saved `tools/list` answer: the tool annotations the filter would have learnt, and
        /// the list a `tools/list` answer is cut from.
        #[arg(long, value_name = "FILE")]
        tools_file: Option<PathBuf>,
    },
    /// Explain the filter's decision on one request: decision, deciding policies, reason.
    Explain {
        #[command(flatten)]
        source: PolicySource,
        /// The caller's claims: JSON inline or a file.
        #[arg(
            long,
            value_name = "JSON|FILE",
            conflicts_with = "token",
            required_unless_present = "token"
        )]
        claims: Option<String>,
        /// A JWT (inline or a file); decoded WITHOUT verifying it.
        #[arg(long, value_name = "JWT|FILE")]
        token: Option<String>,
        /// The JSON-RPC request: JSON inline or a file.
        #[arg(long, value_name = "JSON|FILE")]
        request: String,
        /// A saved `tools/list` answer: the tool annotations the filter would have learnt, and
        /// the list a `tools/list` answer is cut from.
        #[arg(long, value_name = "FILE")]
        tools_file: Option<PathBuf>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct SchemaArgs {
    /// A saved `tools/list` answer (JSON-RPC response, its result or the tools array);
    /// repeatable, for the servers behind one filter.
    #[arg(long = "tools-file", value_name = "FILE")]
    tools_files: Vec<PathBuf>,
    /// A saved `prompts/list` answer, whose prompt arguments become `arg_*` of `Prompt`;
    /// repeatable.
    #[arg(long = "prompts-file", value_name = "FILE")]
    prompts_files: Vec<PathBuf>,
    /// A live MCP server (streamable HTTP) whose `tools/list` (and `prompts/list`) type the
    /// `arg_*` attributes; repeatable.
    #[arg(long = "server", value_name = "URL")]
    servers: Vec<String>,
    /// Bearer token for `--server` (every one of them).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MCP_MESH_AUTH_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// A claim every token carries: `NAME:TYPE` (String, Long, Bool, decimal, Set<…>).
    #[arg(long = "claim", value_name = "NAME:TYPE")]
    claims: Vec<String>,
    /// A claim some tokens lack: `NAME:TYPE`, or `NAME` for one of --claims-from. Policies must
    /// test it with `has` before reading it.
    #[arg(long = "optional-claim", value_name = "NAME[:TYPE]")]
    optional_claims: Vec<String>,
    /// A sample token's claims (JSON) or a JWT (decoded unverified): each claim is declared with
    /// its type, as present in every token unless named by --optional-claim.
    #[arg(long, value_name = "FILE")]
    claims_from: Option<PathBuf>,
    /// The filter's `multi_valued_claims` (also offered as `claimset_<name>`).
    #[arg(long = "multi-valued-claim", value_name = "NAME", default_values = ["scp", "scope"])]
    multi_valued: Vec<String>,
    /// The filter's `cedar.group_entity_type`.
    #[arg(long, default_value = "THVGroup")]
    group_entity_type: String,
    /// Print Cedar's JSON schema format instead of the `.cedarschema` syntax.
    #[arg(long)]
    json: bool,
    /// Write to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Schema(args) => schema_command(&args),
        Command::Validate { source } => validate_command(&source),
        Command::Test {
            source,
            cases,
            tools_file,
        } => test_command(&source, &cases, tools_file.as_deref()),
        Command::Explain {
            source,
            claims,
            token,
            request,
            tools_file,
            json,
        } => explain_command(
            &source,
            claims.as_deref(),
            token.as_deref(),
            &request,
            tools_file.as_deref(),
            json,
        ),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("mcp-mesh-auth: {err}");
            ExitCode::from(2)
        }
    }
}

fn schema_command(args: &SchemaArgs) -> Result<bool, CliError> {
    let mut offered = tools::Offered::default();
    for path in &args.tools_files {
        let answer = parse_document(path, &read(path)?)?;
        offered.tools.extend(tools::from_answer(&answer)?);
    }
    for path in &args.prompts_files {
        let answer = parse_document(path, &read(path)?)?;
        offered.prompts.extend(tools::items(&answer, "prompts")?);
    }
    for url in &args.servers {
        let server = tools::from_server(url, args.token.as_deref())?;
        offered.tools.extend(server.tools);
        offered.prompts.extend(server.prompts);
    }
    let mut claims = match &args.claims_from {
        Some(path) => {
            let optional: Vec<String> = args
                .optional_claims
                .iter()
                .filter(|spec| !spec.contains(':'))
                .cloned()
                .collect();
            schema::claims_from_sample(&sample_claims(path)?, &optional)
        }
        None => Default::default(),
    };
    for (specs, required) in [(&args.claims, true), (&args.optional_claims, false)] {
        for spec in specs {
            match spec.split_once(':') {
                Some((name, kind)) => {
                    claims.insert(
                        name.trim().to_owned(),
                        Attribute {
                            kind: CedarType::parse(kind)?,
                            required,
                        },
                    );
                }
                None if claims.contains_key(spec) => {}
                None => {
                    return Err(CliError::Usage(format!(
                        "claim `{spec}` needs a type (`{spec}:String`), or must be in --claims-from"
                    )))
                }
            }
        }
    }
    let input = SchemaInput {
        claims,
        multi_valued: args.multi_valued.clone(),
        group_entity_type: args.group_entity_type.clone(),
        tools: offered.tools,
        prompts: offered.prompts,
    };
    let (schema, warnings) = schema::generate(&input);
    for warning in warnings {
        eprintln!("mcp-mesh-auth: warning: {warning}");
    }
    let text = if args.json {
        serde_json::to_string_pretty(&schema).map_err(|err| CliError::Schema(err.to_string()))?
            + "\n"
    } else {
        schema::to_cedarschema(&schema)?
    };
    // What is printed must load in the filter: check it as the filter's `cedar.schema` would be.
    parse_schema(&if args.json {
        schema
    } else {
        Value::String(text.clone())
    })?;
    match &args.output {
        Some(path) => std::fs::write(path, text)?,
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(true)
}

/// A sample token's claims: a JSON object, or a JWT decoded without verification.
fn sample_claims(path: &Path) -> Result<Map<String, Value>, CliError> {
    let text = read(path)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(claims)) => Ok(claims),
        _ => decide::unverified_claims(&text),
    }
}

fn validate_command(source: &PolicySource) -> Result<bool, CliError> {
    let loaded = source.load()?;
    let schema_value = loaded.config.pointer("/cedar/schema").cloned().ok_or_else(|| {
        CliError::Usage(
            "no schema: give --schema FILE (make one with `mcp-mesh-auth schema`), or a --config whose cedar section has one".into(),
        )
    })?;
    let schema = parse_schema(&schema_value)?;
    let parsed = parse_policies(&loaded.texts)?;
    let problems = validate(&parsed, &schema, &loaded.texts);
    for problem in &problems {
        let place = loaded.origin(problem.text);
        let line = problem.line.map(|l| format!(":{l}")).unwrap_or_default();
        let help = problem
            .help
            .as_deref()
            .map(|h| format!("\n  help: {h}"))
            .unwrap_or_default();
        println!(
            "{place}{line}: policy `{}`: {}{help}",
            problem.policy, problem.message
        );
    }
    let count = parsed.set.policies().count();
    if problems.is_empty() {
        println!("ok: {count} policies validate against the schema");
    } else {
        println!("{} of {count} policies fail validation", problems.len());
    }
    Ok(problems.is_empty())
}

fn server_tools(tools_file: Option<&Path>) -> Result<ServerTools, CliError> {
    match tools_file {
        Some(path) => {
            let answer = parse_document(path, &read(path)?)?;
            Ok(ServerTools::new(tools::from_answer(&answer)?))
        }
        None => Ok(ServerTools::default()),
    }
}

fn test_command(
    source: &PolicySource,
    cases: &Path,
    tools_file: Option<&Path>,
) -> Result<bool, CliError> {
    let config = source.load()?.filter_config()?;
    let server = server_tools(tools_file)?;
    let file: decide::CaseFile = serde_yaml::from_str(&read(cases)?)
        .map_err(|err| CliError::Input(format!("{}: {err}", cases.display())))?;
    let mut failed = 0;
    for case in &file.cases {
        let outcome = decide::decide(&config, &server, case.claims()?, &case.request);
        match case.check(&outcome) {
            None => println!("ok    {}", case.name),
            Some(why) => {
                failed += 1;
                println!("FAIL  {}: {why}", case.name);
            }
        }
    }
    let total = file.cases.len();
    println!(
        "{} passed, {failed} failed, {total} cases ({})",
        total - failed,
        cases.display()
    );
    Ok(failed == 0)
}

/// JSON given inline (starting with `{`) or in a file.
fn inline_or_file(text: &str) -> Result<String, CliError> {
    if text.trim_start().starts_with('{') {
        Ok(text.to_owned())
    } else {
        read(Path::new(text))
    }
}

fn explain_command(
    source: &PolicySource,
    claims: Option<&str>,
    token: Option<&str>,
    request: &str,
    tools_file: Option<&Path>,
    as_json: bool,
) -> Result<bool, CliError> {
    let config = source.load()?.filter_config()?;
    let (claims, unverified) = match (claims, token) {
        (Some(claims), _) => match serde_json::from_str(&inline_or_file(claims)?) {
            Ok(Value::Object(claims)) => (claims, false),
            _ => return Err(CliError::Input("--claims is not a JSON object".into())),
        },
        (None, Some(token)) => {
            let token = if token.matches('.').count() == 2 && !Path::new(token).exists() {
                token.to_owned()
            } else {
                read(Path::new(token))?
            };
            (decide::unverified_claims(&token)?, true)
        }
        (None, None) => return Err(CliError::Usage("give --claims or --token".into())),
    };
    let request: Value = serde_json::from_str(&inline_or_file(request)?)
        .map_err(|err| CliError::Input(format!("--request is not JSON: {err}")))?;
    let outcome = decide::decide(&config, &server_tools(tools_file)?, claims, &request);
    const UNVERIFIED: &str =
        "the token was decoded WITHOUT verifying its signature, issuer, audience or expiry";
    if as_json {
        let mut value = json!(outcome);
        value["decision"] = json!(if outcome.allowed { "allow" } else { "deny" });
        if unverified {
            value["note"] = json!(UNVERIFIED);
        }
        println!("{value}");
        return Ok(true);
    }
    if unverified {
        println!("note: {UNVERIFIED}");
    }
    println!(
        "decision: {}",
        if outcome.allowed { "allow" } else { "deny" }
    );
    let policies = if outcome.policies.is_empty() {
        "(none)".to_owned()
    } else {
        outcome.policies.join(", ")
    };
    println!("policies: {policies}");
    println!("reason:   {}", outcome.reason);
    if let Some(listed) = &outcome.listed {
        println!("listed:   {}", listed.join(", "));
    }
    if let Some(answer) = &outcome.answer {
        println!("client:   {answer}");
    }
    Ok(true)
}
