//! Readable names for series keys (`--names FILE`): operators think in `spine-03/17`, feeds
//! speak `0x0002c90300f172a0:17`. The file is either
//!
//! - CSV `guid,port,name` (an optional header line with exactly those words; `#` comments): a
//!   row with a port names that port, a row with a blank port names the node, whose ports are
//!   then `<node name>/<port>`; or
//! - the output of `ibnetdiscover -p`: each line names the node whose GUID it starts with
//!   (`SW 1719 10 0x7cfe9003009ce5b0 4x EDR - CA ... ( 'ib-i1l1s01' - 'o0001 HCA-1' )`).
//!
//! GUIDs are normalised as keys are (see [`crate::shared::feed::key`]). A named series answers
//! to its name and to its key; list, top and `/metrics` show the name. The file is re-read on
//! SIGHUP; a file that does not parse keeps the names in force and says why.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::shared::feed::key;

/// The largest names file read (a fabric of 100k ports needs a few MiB).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Why a names file could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamesError {
    Read {
        path: PathBuf,
        why: String,
    },
    TooLarge {
        path: PathBuf,
    },
    /// A line that is neither `guid,port,name` nor an `ibnetdiscover -p` line.
    Line {
        line: usize,
        why: String,
    },
    /// Two different names for one port, or one name for two ports.
    Conflict {
        line: usize,
        why: String,
    },
}

impl fmt::Display for NamesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamesError::Read { path, why } => write!(f, "cannot read {}: {why}", path.display()),
            NamesError::TooLarge { path } => write!(
                f,
                "{} is larger than {} MiB",
                path.display(),
                MAX_FILE_BYTES >> 20
            ),
            NamesError::Line { line, why } => write!(f, "line {line}: {why}"),
            NamesError::Conflict { line, why } => write!(f, "line {line}: {why}"),
        }
    }
}

impl std::error::Error for NamesError {}

/// Names of ports and nodes, both ways.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Names {
    /// Port key → its own name.
    ports: HashMap<String, String>,
    /// Normalised node GUID → node name.
    nodes: HashMap<String, String>,
    /// Name → port key (port names) or node GUID (node names).
    by_name: HashMap<String, String>,
}

impl Names {
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.nodes.is_empty()
    }

    /// Named ports and nodes.
    pub fn len(&self) -> usize {
        self.ports.len() + self.nodes.len()
    }

    /// Parses a names file's text (see the module docs for the two forms).
    pub fn parse(text: &str) -> Result<Names, NamesError> {
        let mut names = Names::default();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some((guid, name)) = ibnetdiscover_line(trimmed) {
                names.add(line_no, &guid, None, name)?;
                continue;
            }
            let fields =
                csv_fields(trimmed).map_err(|why| NamesError::Line { line: line_no, why })?;
            let [guid, port, name] = fields.as_slice() else {
                return Err(NamesError::Line {
                    line: line_no,
                    why: format!(
                        "{} fields; expected guid,port,name or an ibnetdiscover -p line",
                        fields.len()
                    ),
                });
            };
            if line_no == 1 && [guid, port, name].map(|f| f.trim()) == ["guid", "port", "name"] {
                continue;
            }
            let port = port.trim();
            let guid = key::normalize_guid(guid).ok_or_else(|| NamesError::Line {
                line: line_no,
                why: format!("{guid:?} is not a GUID"),
            })?;
            let port = match port {
                "" => None,
                p => Some(key::normalize_port(p).ok_or_else(|| NamesError::Line {
                    line: line_no,
                    why: format!("{p:?} is not a port number"),
                })?),
            };
            names.add(line_no, &guid, port, name.trim())?;
        }
        Ok(names)
    }

    fn add(
        &mut self,
        line: usize,
        guid: &str,
        port: Option<u16>,
        name: &str,
    ) -> Result<(), NamesError> {
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            return Err(NamesError::Line {
                line,
                why: format!("{name:?} is not a usable name"),
            });
        }
        let target = match port {
            Some(port) => format!("{guid}:{port}"),
            None => guid.to_string(),
        };
        let table = if port.is_some() {
            &mut self.ports
        } else {
            &mut self.nodes
        };
        if let Some(old) = table.get(&target) {
            if old == name {
                return Ok(()); // ibnetdiscover lists a node once per port
            }
            return Err(NamesError::Conflict {
                line,
                why: format!("{target} is named both {old:?} and {name:?}"),
            });
        }
        if let Some(other) = self.by_name.get(name) {
            return Err(NamesError::Conflict {
                line,
                why: format!("{name:?} names both {other} and {target}"),
            });
        }
        table.insert(target.clone(), name.to_string());
        self.by_name.insert(name.to_string(), target);
        Ok(())
    }

    /// The name a series key shows: its own, else `<node name>/<port>`.
    pub fn name_of(&self, series: &str) -> Option<String> {
        if let Some(name) = self.ports.get(series) {
            return Some(name.clone());
        }
        let (guid, port) = series.rsplit_once(':')?;
        self.nodes.get(guid).map(|node| format!("{node}/{port}"))
    }

    /// The series key a name stands for: a port's name, or `<node name>/<port>`.
    pub fn key_of(&self, name: &str) -> Option<String> {
        if let Some(target) = self.by_name.get(name) {
            if self.ports.contains_key(target) {
                return Some(target.clone());
            }
        }
        let (node, port) = name.rsplit_once('/')?;
        let guid = self
            .by_name
            .get(node)
            .filter(|g| self.nodes.contains_key(*g))?;
        let port = key::normalize_port(port)?;
        Some(format!("{guid}:{port}"))
    }
}

/// `SW  1719 10 0x7cfe9003009ce5b0 4x EDR - ... ( 'ib-i1l1s01' - 'o0001 HCA-1' )` → the GUID
/// and the first quoted name (the node the line starts with).
fn ibnetdiscover_line(line: &str) -> Option<(String, &str)> {
    let mut fields = line.split_ascii_whitespace();
    let kind = fields.next()?;
    if !matches!(kind, "SW" | "CA" | "RT") {
        return None;
    }
    let guid = key::normalize_guid(fields.nth(2)?)?;
    let start = line.find('\'')? + 1;
    let end = start + line[start..].find('\'')?;
    Some((guid, &line[start..end]))
}

/// The fields of one CSV line (quotes as RFC 4180).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line.as_bytes());
    match reader.records().next() {
        Some(Ok(record)) => Ok(record.iter().map(str::to_string).collect()),
        Some(Err(e)) => Err(e.to_string()),
        None => Ok(Vec::new()),
    }
}

/// The names in force, and the file they come from (re-read on SIGHUP).
pub struct NameBook {
    path: Option<PathBuf>,
    current: RwLock<Arc<Names>>,
}

impl NameBook {
    /// No names: every series shows its key.
    pub fn empty() -> NameBook {
        NameBook {
            path: None,
            current: RwLock::new(Arc::new(Names::default())),
        }
    }

    /// Loads `path`; a start-up with a names file that does not parse fails.
    pub fn load(path: &Path) -> Result<NameBook, NamesError> {
        let names = read(path)?;
        Ok(NameBook {
            path: Some(path.to_path_buf()),
            current: RwLock::new(Arc::new(names)),
        })
    }

    /// The names in force (cheap: an `Arc`).
    pub fn get(&self) -> Arc<Names> {
        match self.current.read() {
            Ok(names) => Arc::clone(&names),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the file; on an error the names in force stay. `None` without a file.
    pub fn reload(&self) -> Option<Result<usize, NamesError>> {
        let path = self.path.as_ref()?;
        Some(read(path).map(|names| {
            let n = names.len();
            match self.current.write() {
                Ok(mut current) => *current = Arc::new(names),
                Err(poisoned) => *poisoned.into_inner() = Arc::new(names),
            }
            n
        }))
    }
}

fn read(path: &Path) -> Result<Names, NamesError> {
    let read_error = |e: std::io::Error| NamesError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(NamesError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Names::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_names_ports_and_nodes_both_ways() {
        let names = Names::parse(
            "guid,port,name\n\
             # spine\n\
             2c90300f172a0,,spine-03\n\
             0x0002c90300f172a0,17,\"spine-03 uplink, rack 4\"\n",
        )
        .expect("parses");
        assert_eq!(
            names.name_of("0x0002c90300f172a0:17").as_deref(),
            Some("spine-03 uplink, rack 4")
        );
        assert_eq!(
            names.name_of("0x0002c90300f172a0:2").as_deref(),
            Some("spine-03/2")
        );
        assert_eq!(names.name_of("0x0000000000000001:2"), None);
        assert_eq!(
            names.key_of("spine-03 uplink, rack 4").as_deref(),
            Some("0x0002c90300f172a0:17")
        );
        assert_eq!(
            names.key_of("spine-03/02").as_deref(),
            Some("0x0002c90300f172a0:2")
        );
        assert_eq!(names.key_of("spine-03"), None, "a node is not a series");
        assert_eq!(names.key_of("leaf-9/1"), None);
    }

    #[test]
    fn bad_lines_and_conflicts_are_refused_with_their_line() {
        for (text, line) in [
            ("zz,1,a\n", 1),
            ("0x1,1,a\n0x1,x,b\n", 2),
            ("0x1,1\n", 1),
            ("0x1,1,a\n0x1,1,b\n", 2),
            ("0x1,1,a\n0x2,1,a\n", 2),
            ("0x1,1,\n", 1),
        ] {
            let err = Names::parse(text).expect_err(text);
            let got = match err {
                NamesError::Line { line, .. } | NamesError::Conflict { line, .. } => line,
                other => panic!("{other}"),
            };
            assert_eq!(got, line, "{text:?}");
        }
    }

    #[test]
    fn ibnetdiscover_output_names_nodes() {
        let names = Names::parse(
            "CA   134  1 0x7cfe9003003b4bde 4x EDR - SW  1719 10 0x7cfe9003009ce5b0 ( 'o0001 HCA-1' - 'ib-i1l1s01' )\n\
             SW  1719 10 0x7cfe9003009ce5b0 4x EDR - CA   134  1 0x7cfe9003003b4bde ( 'ib-i1l1s01' - 'o0001 HCA-1' )\n\
             SW  1719 11 0x7cfe9003009ce5b0 4x EDR - CA   133  1 0x7cfe9003003b4b96 ( 'ib-i1l1s01' - 'o0002 HCA-1' )\n\
             SW  2052 37 0x506b4b03005c2740 4x ???                                    'ib-i4l1s01'\n",
        )
        .expect("parses");
        assert_eq!(
            names.name_of("0x7cfe9003009ce5b0:10").as_deref(),
            Some("ib-i1l1s01/10")
        );
        assert_eq!(
            names.name_of("0x7cfe9003003b4bde:1").as_deref(),
            Some("o0001 HCA-1/1")
        );
        assert_eq!(
            names.name_of("0x506b4b03005c2740:37").as_deref(),
            Some("ib-i4l1s01/37")
        );
    }

    #[test]
    fn the_public_ibnetdiscover_samples_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/treydock_infiniband_exporter/ibnetdiscover");
        let Ok(text) = std::fs::read_to_string(dir.join("test.out")) else {
            eprintln!("skipped: fixtures are not here");
            return;
        };
        let names = Names::parse(&text).expect("parses");
        assert_eq!(
            names.name_of("0x7cfe9003009ce5b0:1").as_deref(),
            Some("ib-i1l1s01/1")
        );
    }
}
