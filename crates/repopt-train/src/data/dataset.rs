//! The in-memory dataset every loader produces.
//!
//! All supported datasets are small enough (at most a few GB decoded) to keep
//! in memory as raw `u8` pixels, which makes every epoch a pure function of
//! the seed: no file system timing can leak into the sample order.

use std::fmt;
use std::str::FromStr;

use super::DataError;

/// Which half of a dataset to load.
///
/// # Example
///
/// ```
/// use repopt_train::data::Split;
///
/// assert_eq!("test".parse::<Split>().unwrap(), Split::Test);
/// assert_eq!("val".parse::<Split>().unwrap(), Split::Test);
/// assert_eq!(Split::Train.to_string(), "train");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training set.
    Train,
    /// The test (or validation) set.
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

impl FromStr for Split {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" | "training" => Ok(Split::Train),
            "test" | "val" | "valid" | "validation" | "eval" => Ok(Split::Test),
            _ => Err(DataError::UnknownSplit {
                name: s.to_string(),
            }),
        }
    }
}

/// A labelled image-classification dataset held in memory as `u8` pixels.
///
/// `images` stores all samples back to back, each in channel-major (CHW)
/// order, so sample `i` is `images[i * C * H * W..(i + 1) * C * H * W]`.
///
/// # Example
///
/// ```
/// use repopt_train::data::Dataset;
///
/// let ds = Dataset {
///     name: "toy".into(),
///     images: vec![0, 1, 2, 3, 4, 5, 6, 7],
///     labels: vec![0, 1],
///     channels: 1,
///     height: 2,
///     width: 2,
///     classes: 2,
///     class_names: vec!["a".into(), "b".into()],
/// };
/// assert_eq!(ds.len(), 2);
/// assert_eq!(ds.image(1), &[4, 5, 6, 7]);
/// assert_eq!(ds.subset(&[1]).labels, vec![1]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Short identifier, e.g. `fashion-mnist`, `cifar10`, `cifar100`, or the
    /// folder name of an image-folder dataset.
    pub name: String,
    /// Pixels of all samples, N x C x H x W.
    pub images: Vec<u8>,
    /// One class index per sample, each `< classes`.
    pub labels: Vec<u32>,
    /// Channels per image (1 for grayscale, 3 for RGB).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Number of classes.
    pub classes: usize,
    /// Human-readable class names, `classes` of them.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Number of samples.
    ///
    /// # Example
    ///
    /// ```
    /// # use repopt_train::data::Dataset;
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 8], labels: vec![0, 0],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// assert_eq!(ds.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset has no samples.
    ///
    /// # Example
    ///
    /// ```
    /// # use repopt_train::data::Dataset;
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 8], labels: vec![0, 0],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// assert!(!ds.is_empty());
    /// assert!(ds.take(0).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image, `C * H * W`.
    ///
    /// # Example
    ///
    /// ```
    /// # use repopt_train::data::Dataset;
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 8], labels: vec![0, 0],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// assert_eq!(ds.image_size(), 4);
    /// ```
    pub fn image_size(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The CHW pixels of sample `i`.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    ///
    /// # Example
    ///
    /// ```
    /// # use repopt_train::data::Dataset;
    /// # let ds = Dataset { name: "t".into(), images: (0..8).collect(), labels: vec![0, 0],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// assert_eq!(ds.image(0), &[0, 1, 2, 3]);
    /// ```
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.image_size();
        &self.images[i * size..(i + 1) * size]
    }

    /// A new dataset holding the given samples, in the given order
    /// (duplicates allowed).
    ///
    /// # Panics
    ///
    /// If an index is out of range.
    ///
    /// # Example
    ///
    /// ```
    /// # use repopt_train::data::Dataset;
    /// # let ds = Dataset { name: "t".into(), images: (0..8).collect(), labels: vec![0, 1],
    /// #     channels: 1, height: 2, width: 2, classes: 2, class_names: vec!["a".into(), "b".into()] };
    /// let s = ds.subset(&[1, 0, 1]);
    /// assert_eq!(s.labels, vec![1, 0, 1]);
    /// assert_eq!(s.image(0), ds.image(1));
    /// ```
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let size = self.image_size();
        let mut images = Vec::with_capacity(indices.len() * size);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            name: self.name.clone(),
            images,
            labels,
            channels: self.channels,
            height: self.height,
            width: self.width,
            classes: self.classes,
            class_names: self.class_names.clone(),
        }
    }

    /// The first `n` samples (all of them if `n >= len`), e.g. for quick
    /// smoke runs.
    ///
    /// # Example
    ///
    /// ```
    /// # use repopt_train::data::Dataset;
    /// # let ds = Dataset { name: "t".into(), images: (0..8).collect(), labels: vec![0, 1],
    /// #     channels: 1, height: 2, width: 2, classes: 2, class_names: vec!["a".into(), "b".into()] };
    /// assert_eq!(ds.take(1).len(), 1);
    /// assert_eq!(ds.take(10).len(), 2);
    /// ```
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        let size = self.image_size();
        Dataset {
            name: self.name.clone(),
            images: self.images[..n * size].to_vec(),
            labels: self.labels[..n].to_vec(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            classes: self.classes,
            class_names: self.class_names.clone(),
        }
    }

    /// How many samples each class has, indexed by class.
    ///
    /// # Example
    ///
    /// ```
    /// # use repopt_train::data::Dataset;
    /// # let ds = Dataset { name: "t".into(), images: (0..8).collect(), labels: vec![0, 1],
    /// #     channels: 1, height: 2, width: 2, classes: 3, class_names: vec!["a".into(), "b".into(), "c".into()] };
    /// assert_eq!(ds.class_counts(), vec![1, 1, 0]);
    /// ```
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// Checks that the fields agree with each other (pixel buffer length,
    /// label range, class-name count). The loaders in this module always
    /// return consistent datasets; this guards hand-built ones.
    ///
    /// # Example
    ///
    /// ```
    /// # use repopt_train::data::Dataset;
    /// # let mut ds = Dataset { name: "t".into(), images: (0..8).collect(), labels: vec![0, 1],
    /// #     channels: 1, height: 2, width: 2, classes: 2, class_names: vec!["a".into(), "b".into()] };
    /// assert!(ds.validate().is_ok());
    /// ds.labels[1] = 7;
    /// assert!(ds.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), DataError> {
        let expected = self
            .len()
            .checked_mul(self.image_size())
            .ok_or_else(|| config("dataset size", "N * C * H * W to fit in memory", "overflow"))?;
        if self.images.len() != expected {
            return Err(config(
                "dataset images length",
                format!(
                    "{expected} (= {} samples x {}x{}x{})",
                    self.len(),
                    self.channels,
                    self.height,
                    self.width
                ),
                self.images.len(),
            ));
        }
        if self.image_size() == 0 {
            return Err(config(
                "dataset image shape",
                "non-zero C, H and W",
                format!("{}x{}x{}", self.channels, self.height, self.width),
            ));
        }
        if let Some((record, &label)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= self.classes)
        {
            return Err(config(
                format!("dataset label at record {record}"),
                format!("< {} classes", self.classes),
                label,
            ));
        }
        if self.class_names.len() != self.classes {
            return Err(config(
                "dataset class_names length",
                self.classes,
                self.class_names.len(),
            ));
        }
        Ok(())
    }
}

fn config(field: impl Into<String>, expected: impl ToString, found: impl ToString) -> DataError {
    DataError::Config {
        field: field.into(),
        expected: expected.to_string(),
        found: found.to_string(),
    }
}
