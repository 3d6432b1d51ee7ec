//! The task table xtask compiles into the shell's configuration (`console-input` holder):
//! one line per task in manifest order, `<name> <bin>`.

use alloc::string::String;
use alloc::vec::Vec;

/// One task of the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskName {
    /// Its manifest name (`blk`).
    pub name: String,
    /// Its binary name (`virtio-blk`).
    pub bin: String,
}

/// Every task of the manifest, by index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskTable {
    tasks: Vec<TaskName>,
}

impl TaskTable {
    /// Reads the configuration blob. Lines that are not `<name> <bin>` in UTF-8 are kept as
    /// unnamed (`?`) so indices stay right; an empty blob is an empty table.
    pub fn parse(config: &[u8]) -> TaskTable {
        let tasks = config
            .split(|byte| *byte == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                let text = core::str::from_utf8(line).unwrap_or("?");
                let mut words = text.split(' ');
                let name = words.next().filter(|w| !w.is_empty()).unwrap_or("?");
                let bin = words.next().unwrap_or(name);
                TaskName {
                    name: String::from(name),
                    bin: String::from(bin),
                }
            })
            .collect();
        TaskTable { tasks }
    }

    /// How many tasks the manifest lists (0 if the table is missing).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the table is missing.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The task at `index`.
    pub fn get(&self, index: usize) -> Option<&TaskName> {
        self.tasks.get(index)
    }

    /// The index of the task called `wanted`: its manifest name first, else its binary name,
    /// else a number (the task index).
    pub fn find(&self, wanted: &str) -> Option<usize> {
        self.tasks
            .iter()
            .position(|task| task.name == wanted)
            .or_else(|| self.tasks.iter().position(|task| task.bin == wanted))
            .or_else(|| {
                wanted
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i < self.tasks.len())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_binaries_are_found() {
        let table =
            TaskTable::parse(b"supervisor supervisor\ndma dma\nblk virtio-blk\nshell shell\n");
        assert_eq!(table.len(), 4);
        assert_eq!(table.get(2).map(|t| t.bin.as_str()), Some("virtio-blk"));
        assert_eq!(table.find("blk"), Some(2));
        assert_eq!(table.find("virtio-blk"), Some(2));
        assert_eq!(table.find("3"), Some(3));
        assert_eq!(table.find("4"), None);
        assert_eq!(table.find("nope"), None);
    }

    #[test]
    fn a_task_name_wins_over_another_tasks_binary() {
        let table = TaskTable::parse(b"a b\nb c\n");
        assert_eq!(table.find("b"), Some(1));
    }

    #[test]
    fn odd_blobs_do_not_panic() {
        assert!(TaskTable::parse(b"").is_empty());
        let table = TaskTable::parse(b"lonely\n\xff\xfe x\n");
        assert_eq!(table.len(), 2);
        assert_eq!(table.get(0).map(|t| t.bin.as_str()), Some("lonely"));
        assert_eq!(table.get(1).map(|t| t.name.as_str()), Some("?"));
    }
}
