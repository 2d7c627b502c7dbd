//! Conversion of `u8` pixels to normalised `f32` model inputs.

/// Per-channel normalisation `(x / 255 - mean[c]) / std[c]`, as
/// torchvision's `ToTensor()` followed by `Normalize(mean, std)`.
///
/// `mean` and `std` hold one value per channel, or a single value used for
/// every channel.
///
/// # Example
///
/// ```
/// use repopt_train::data::Normalize;
///
/// let n = Normalize::new(vec![0.5], vec![0.25]);
/// let mut out = [0.0f32; 2];
/// n.apply(&[0, 255], 1, 1, 2, &mut out);
/// assert_eq!(out, [-2.0, 2.0]);
/// assert_eq!(Normalize::cifar10().mean, vec![0.4914, 0.4822, 0.4465]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// Per-channel mean of the `[0, 1]`-scaled pixels.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of the `[0, 1]`-scaled pixels.
    pub std: Vec<f32>,
}

impl Default for Normalize {
    /// The ImageNet statistics, the usual choice for natural RGB images.
    fn default() -> Self {
        Normalize::imagenet()
    }
}

impl Normalize {
    /// Normalisation with the given statistics.
    ///
    /// # Example
    ///
    /// ```
    /// let n = repopt_train::data::Normalize::new(vec![0.5; 3], vec![0.5; 3]);
    /// assert_eq!(n.std.len(), 3);
    /// ```
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Self {
        Normalize { mean, std }
    }

    /// Only scales to `[0, 1]` (mean 0, std 1).
    ///
    /// # Example
    ///
    /// ```
    /// let mut out = [0.0f32];
    /// repopt_train::data::Normalize::unit().apply(&[255], 1, 1, 1, &mut out);
    /// assert_eq!(out, [1.0]);
    /// ```
    pub fn unit() -> Self {
        Normalize::new(vec![0.0], vec![1.0])
    }

    /// Fashion-MNIST: mean 0.2860, std 0.3530 (one channel).
    ///
    /// # Example
    ///
    /// ```
    /// assert_eq!(repopt_train::data::Normalize::fashion_mnist().mean, vec![0.2860]);
    /// ```
    pub fn fashion_mnist() -> Self {
        Normalize::new(vec![0.2860], vec![0.3530])
    }

    /// MNIST: mean 0.1307, std 0.3081 (one channel).
    ///
    /// # Example
    ///
    /// ```
    /// assert_eq!(repopt_train::data::Normalize::mnist().std, vec![0.3081]);
    /// ```
    pub fn mnist() -> Self {
        Normalize::new(vec![0.1307], vec![0.3081])
    }

    /// CIFAR-10: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616).
    ///
    /// # Example
    ///
    /// ```
    /// assert_eq!(repopt_train::data::Normalize::cifar10().std[2], 0.2616);
    /// ```
    pub fn cifar10() -> Self {
        Normalize::new(vec![0.4914, 0.4822, 0.4465], vec![0.2470, 0.2435, 0.2616])
    }

    /// CIFAR-100: mean (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762).
    ///
    /// # Example
    ///
    /// ```
    /// assert_eq!(repopt_train::data::Normalize::cifar100().mean[0], 0.5071);
    /// ```
    pub fn cifar100() -> Self {
        Normalize::new(vec![0.5071, 0.4865, 0.4409], vec![0.2673, 0.2564, 0.2762])
    }

    /// ImageNet: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225); the
    /// default for image-folder datasets.
    ///
    /// # Example
    ///
    /// ```
    /// assert_eq!(repopt_train::data::Normalize::imagenet().mean[1], 0.456);
    /// ```
    pub fn imagenet() -> Self {
        Normalize::new(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
    }

    /// The statistics for a dataset name as set by this module's loaders
    /// (`fashion-mnist`, `mnist`, `cifar10`, `cifar100`); anything else gets
    /// ImageNet statistics if it has 3 channels and mean 0.5, std 0.5
    /// otherwise.
    ///
    /// # Example
    ///
    /// ```
    /// use repopt_train::data::Normalize;
    ///
    /// assert_eq!(Normalize::for_dataset("cifar100", 3), Normalize::cifar100());
    /// assert_eq!(Normalize::for_dataset("my-photos", 3), Normalize::imagenet());
    /// ```
    pub fn for_dataset(name: &str, channels: usize) -> Self {
        match name {
            "fashion-mnist" => Normalize::fashion_mnist(),
            "mnist" => Normalize::mnist(),
            "cifar10" => Normalize::cifar10(),
            "cifar100" => Normalize::cifar100(),
            _ if channels == 3 => Normalize::imagenet(),
            _ => Normalize::new(vec![0.5], vec![0.5]),
        }
    }

    /// Whether the statistics can normalise images with `channels`
    /// channels (one value per channel, or one value for all; all std
    /// values non-zero).
    ///
    /// # Example
    ///
    /// ```
    /// use repopt_train::data::Normalize;
    /// assert!(Normalize::cifar10().fits(3));
    /// assert!(!Normalize::cifar10().fits(1));
    /// assert!(Normalize::unit().fits(1));
    /// ```
    pub fn fits(&self, channels: usize) -> bool {
        let len_ok = |n: usize| n == channels || n == 1;
        len_ok(self.mean.len()) && len_ok(self.std.len()) && self.std.iter().all(|&s| s != 0.0)
    }

    /// Writes the normalised `c x h x w` image into `out`.
    ///
    /// # Panics
    ///
    /// If `img` or `out` is not `c * h * w` long, or if the statistics do not
    /// [fit](Self::fits) `c` channels.
    ///
    /// # Example
    ///
    /// ```
    /// use repopt_train::data::Normalize;
    ///
    /// let mut out = [0.0f32; 2];
    /// Normalize::new(vec![0.0, 1.0], vec![1.0, 1.0]).apply(&[255, 255], 2, 1, 1, &mut out);
    /// assert_eq!(out, [1.0, 0.0]);
    /// ```
    pub fn apply(&self, img: &[u8], c: usize, h: usize, w: usize, out: &mut [f32]) {
        let plane = h * w;
        assert_eq!(img.len(), c * plane, "image length must be c * h * w");
        assert_eq!(out.len(), c * plane, "output length must be c * h * w");
        assert!(
            self.fits(c),
            "normalisation statistics do not fit {c} channels"
        );
        if plane == 0 {
            return;
        }
        for (ch, (src, dst)) in img
            .chunks_exact(plane)
            .zip(out.chunks_exact_mut(plane))
            .enumerate()
        {
            let mean = self.mean[ch.min(self.mean.len() - 1)];
            let std = self.std[ch.min(self.std.len() - 1)];
            // A table keeps torchvision's exact arithmetic, (x / 255 - mean) / std,
            // at the cost of one lookup per pixel.
            let lut: [f32; 256] = std::array::from_fn(|v| (v as f32 / 255.0 - mean) / std);
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = lut[usize::from(s)];
            }
        }
    }
}
