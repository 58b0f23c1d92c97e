//! Which ServiceAccount speaks for which caller: `caller=system:serviceaccount:<ns>:<sa>`.

use super::{check_caller_name, entries};

const PREFIX: &str = "system:serviceaccount:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerSubjects {
    /// Subject and the caller it maps to; a subject appears once.
    subjects: Vec<(String, String)>,
}

impl CallerSubjects {
    /// Parses `caller=system:serviceaccount:<ns>:<sa>[,…]`; line breaks separate entries
    /// too. A caller may have several ServiceAccounts; a ServiceAccount has one caller.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut subjects: Vec<(String, String)> = Vec::new();
        for entry in entries(spec) {
            let (caller, subject) = entry
                .split_once('=')
                .ok_or("expected caller=system:serviceaccount:<namespace>:<name> entries")?;
            let (caller, subject) = (caller.trim(), subject.trim());
            check_caller_name(caller)?;
            check_subject(subject)?;
            if subjects.iter().any(|(s, _)| s == subject) {
                return Err(format!("{subject} is listed twice"));
            }
            subjects.push((subject.to_owned(), caller.to_owned()));
        }
        if subjects.is_empty() {
            return Err("no caller subjects given".into());
        }
        Ok(CallerSubjects { subjects })
    }

    /// The caller this token subject speaks for, if any.
    pub fn caller_for(&self, subject: &str) -> Option<&str> {
        self.subjects
            .iter()
            .find(|(s, _)| s == subject)
            .map(|(_, caller)| caller.as_str())
    }
}

/// `system:serviceaccount:<namespace>:<name>` with Kubernetes' own name rules: the
/// namespace a DNS label, the name a DNS subdomain.
fn check_subject(subject: &str) -> Result<(), String> {
    let invalid =
        || format!("{subject:?} is not system:serviceaccount:<namespace>:<serviceaccount>");
    let (namespace, name) = subject
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(invalid)?;
    let label = |s: &str| {
        (1..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if !label(namespace) || name.len() > 253 || !name.split('.').all(label) {
        return Err(invalid());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_service_accounts_to_callers() {
        let s = CallerSubjects::parse(
            "invoice-app=system:serviceaccount:invoices:invoice-app,\n invoice-app = system:serviceaccount:invoices:invoice-app-v2",
        )
        .expect("valid");
        assert_eq!(
            s.caller_for("system:serviceaccount:invoices:invoice-app"),
            Some("invoice-app")
        );
        assert_eq!(
            s.caller_for("system:serviceaccount:invoices:invoice-app-v2"),
            Some("invoice-app")
        );
        assert_eq!(s.caller_for("system:serviceaccount:invoices:other"), None);
        assert_eq!(
            s.caller_for("system:serviceaccount:payments:invoice-app"),
            None
        );
    }

    #[test]
    fn rejects_what_is_not_a_service_account() {
        for spec in [
            "",
            "invoice-app",
            "invoice-app=system:serviceaccount:invoices",
            "invoice-app=system:serviceaccount::invoice-app",
            "invoice-app=system:serviceaccount:invoices:",
            "invoice-app=system:serviceaccount:Invoices:invoice-app",
            "invoice-app=system:serviceaccount:invoices:invoice-app:x",
            "invoice-app=system:node:worker-1",
            "invoice-app=system:serviceaccounts:invoices",
            "bad name=system:serviceaccount:invoices:invoice-app",
            // One ServiceAccount speaking for two callers would make keys ambiguous.
            "a=system:serviceaccount:invoices:x,b=system:serviceaccount:invoices:x",
        ] {
            assert!(CallerSubjects::parse(spec).is_err(), "{spec:?}");
        }
    }
}
