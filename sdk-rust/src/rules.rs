//! The rules every pipeline follows, shared by the server (`gofer`) and the SDK so the two cannot
//! drift apart: Gofer's identifier rule and cycle detection in a task graph.
//!
//! Pure functions over ids; must not know config types, JSON or I/O.

/// What is wrong with an identifier (pipeline, task, namespace, trigger, plugin...) under Gofer's
/// rule, 3 to 32 characters of `[a-zA-Z0-9-]`, or `None` when it is fine.
///
/// ```
/// use gofer_sdk::rules::identifier_problem;
/// assert_eq!(identifier_problem("build-app"), None);
/// assert_eq!(identifier_problem("ab"), Some("length cannot be less than 3"));
/// ```
pub fn identifier_problem(id: &str) -> Option<&'static str> {
    if id.len() > 32 {
        Some("length cannot be greater than 32")
    } else if id.len() < 3 {
        Some("length cannot be less than 3")
    } else if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Some("can only be made up of alphanumeric and hyphen characters")
    } else {
        None
    }
}

/// What is wrong with a task id as the server accepts it, or `None`: 1 to 64 characters of
/// `[a-zA-Z0-9_.-]` starting with a letter or digit. Looser than [`identifier_problem`] (which
/// the SDKs keep recommending) because the earlier Gofer did not check task ids, and configs it
/// ran have ids such as `task_one`; still safe in a URL, a file name and a container name.
///
/// ```
/// use gofer_sdk::rules::task_id_problem;
/// assert_eq!(task_id_problem("task_one"), None);
/// assert_eq!(task_id_problem("x"), None);
/// assert!(task_id_problem("..").is_some());
/// assert!(task_id_problem("a/b").is_some());
/// ```
pub fn task_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("it is empty")
    } else if id.len() > 64 {
        Some("length cannot be greater than 64")
    } else if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some("it must start with a letter or a digit")
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        Some("can only be made up of alphanumeric characters, '_', '.' and '-'")
    } else {
        None
    }
}

/// One cycle of a task graph, as a path that starts and ends on the same task, if there is any.
/// `tasks` are (id, the ids it depends on), in the pipeline's order; self-dependencies count and
/// dependencies on unknown ids are ignored. Iterative, so very deep graphs are fine.
///
/// ```
/// use gofer_sdk::rules::find_cycle;
/// let tasks = [("a", vec!["c"]), ("b", vec!["a"]), ("c", vec!["b"])];
/// assert_eq!(find_cycle(&tasks).unwrap(), ["a", "c", "b", "a"]);
/// assert_eq!(find_cycle(&[("a", vec![]), ("b", vec!["a"])]), None);
/// ```
pub fn find_cycle<S: AsRef<str>>(tasks: &[(S, Vec<S>)]) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnPath,
        Done,
    }
    let index: std::collections::HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(position, (id, _))| (id.as_ref(), position))
        .collect();
    let parents: Vec<Vec<usize>> = tasks
        .iter()
        .map(|(_, depends_on)| {
            // In the pipeline's order, so the cycle reported does not depend on map order.
            let mut parents: Vec<usize> = depends_on
                .iter()
                .filter_map(|parent| index.get(parent.as_ref()).copied())
                .collect();
            parents.sort_unstable();
            parents
        })
        .collect();
    let id = |node: usize| tasks[node].0.as_ref().to_string();
    let mut marks = vec![Mark::Unvisited; tasks.len()];
    for start in 0..tasks.len() {
        if marks[start] != Mark::Unvisited {
            continue;
        }
        // Depth-first; `path` holds (task, next parent to visit).
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnPath;
        while let Some((node, next)) = path.last_mut() {
            let node = *node;
            let Some(&parent) = parents[node].get(*next) else {
                marks[node] = Mark::Done;
                path.pop();
                continue;
            };
            *next += 1;
            match marks[parent] {
                Mark::Unvisited => {
                    marks[parent] = Mark::OnPath;
                    path.push((parent, 0));
                }
                Mark::OnPath => {
                    let from = path.iter().position(|(n, _)| *n == parent).unwrap_or(0);
                    let mut cycle: Vec<String> = path[from..].iter().map(|(n, _)| id(*n)).collect();
                    cycle.push(id(parent));
                    return Some(cycle);
                }
                Mark::Done => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_dependencies_and_deep_chains() {
        assert_eq!(find_cycle(&[("a", vec!["a"])]).unwrap(), ["a", "a"]);
        // 100,000 tasks in a chain: no stack to overflow.
        let ids: Vec<String> = (0..100_000).map(|n| format!("t{n}")).collect();
        let mut chain: Vec<(&str, Vec<&str>)> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                (
                    id.as_str(),
                    if n == 0 {
                        vec![]
                    } else {
                        vec![ids[n - 1].as_str()]
                    },
                )
            })
            .collect();
        assert_eq!(find_cycle(&chain), None);
        chain[0].1.push(ids[99_999].as_str());
        assert_eq!(find_cycle(&chain).unwrap().len(), 100_001);
    }

    #[test]
    fn identifiers() {
        assert_eq!(
            identifier_problem(&"x".repeat(33)),
            Some("length cannot be greater than 32")
        );
        assert_eq!(
            identifier_problem("a_b"),
            Some("can only be made up of alphanumeric and hyphen characters")
        );
        assert_eq!(identifier_problem("Build-2"), None);
    }
}
