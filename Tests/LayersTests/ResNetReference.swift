import Foundation

// Independent Double references of the ResNet layers, direct loops from the PyTorch definitions
// (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear,
// nn.CrossEntropyLoss, torchvision's Bottleneck and stem), sharing no code with the Float layers.
// Images are channels-last arrays: element (b, h, w, c) of a [batch, height, width, channels] image
// sits at ((b · height + h) · width + w) · channels + c, as the layers take them.

/// The dimensions of a channels-last image batch.
struct ImageShape: Equatable, CustomStringConvertible {
    var batch: Int
    var height: Int
    var width: Int
    var channels: Int

    var count: Int { batch * height * width * channels }
    var dimensions: [Int] { [batch, height, width, channels] }
    var description: String { "\(dimensions)" }

    func index(_ b: Int, _ h: Int, _ w: Int, _ c: Int) -> Int { ((b * height + h) * width + w) * channels + c }
}

/// A batch of images and its shape.
struct Image {
    var values: [Double]
    var shape: ImageShape
}

enum ResNetReference {
    /// nn.Conv2d: y[b, o, i, j] = bias[o] + Σ_{c, kh, kw} weight[o, c, kh, kw] · x[b, c, i·s − p + kh, j·s − p + kw],
    /// x zero outside the image; weight [outputChannels, channels, kernel, kernel].
    static func conv2d(_ x: Image, weight: [Double], bias: [Double]? = nil, outputChannels: Int,
                       kernel: Int, stride: Int, padding: Int) -> Image {
        let s = x.shape
        let out = ImageShape(batch: s.batch, height: (s.height + 2 * padding - kernel) / stride + 1,
                             width: (s.width + 2 * padding - kernel) / stride + 1, channels: outputChannels)
        precondition(weight.count == outputChannels * s.channels * kernel * kernel, "reference conv2d: weight size")
        var y = [Double](repeating: 0, count: out.count)
        // Raw pointers: their subscripts are transparent, so even a debug build runs these loops at speed.
        x.values.withUnsafeBufferPointer { x in
            weight.withUnsafeBufferPointer { weight in
                y.withUnsafeMutableBufferPointer { y in
                    for b in 0..<out.batch {
                        for i in 0..<out.height {
                            for j in 0..<out.width {
                                for o in 0..<outputChannels {
                                    var sum = bias?[o] ?? 0
                                    for c in 0..<s.channels {
                                        for kh in 0..<kernel {
                                            let h = i * stride - padding + kh
                                            guard h >= 0 && h < s.height else { continue }
                                            for kw in 0..<kernel {
                                                let w = j * stride - padding + kw
                                                guard w >= 0 && w < s.width else { continue }
                                                sum += weight[((o * s.channels + c) * kernel + kh) * kernel + kw] * x[s.index(b, h, w, c)]
                                            }
                                        }
                                    }
                                    y[out.index(b, i, j, o)] = sum
                                }
                            }
                        }
                    }
                }
            }
        }
        return Image(values: y, shape: out)
    }

    /// Per channel: the mean and the biased variance over batch, height and width.
    static func channelStatistics(_ x: Image) -> (mean: [Double], variance: [Double]) {
        let c = x.shape.channels
        let n = Double(x.values.count / c)
        var mean = [Double](repeating: 0, count: c)
        for (i, value) in x.values.enumerated() { mean[i % c] += value / n }
        var variance = [Double](repeating: 0, count: c)
        for (i, value) in x.values.enumerated() { variance[i % c] += (value - mean[i % c]) * (value - mean[i % c]) / n }
        return (mean, variance)
    }

    /// nn.BatchNorm2d: (x − μ) / √(σ² + eps) · weight + bias per channel; training mode takes μ and the
    /// biased σ² of x itself, eval mode the given running estimates.
    static func batchNorm(_ x: Image, weight: [Double], bias: [Double], eps: Double,
                          running: (mean: [Double], variance: [Double])? = nil) -> Image {
        let (mean, variance) = running ?? channelStatistics(x)
        let c = x.shape.channels
        let y = x.values.indices.map { i in
            (x.values[i] - mean[i % c]) / (variance[i % c] + eps).squareRoot() * weight[i % c] + bias[i % c]
        }
        return Image(values: y, shape: x.shape)
    }

    /// The running estimates after training forwards on `batches`, from running_mean 0 and running_var 1:
    /// each moves by `momentum` towards the batch mean and the unbiased batch variance.
    static func runningStatistics(after batches: [Image], channels: Int, momentum: Double) -> (mean: [Double], variance: [Double]) {
        var mean = [Double](repeating: 0, count: channels)
        var variance = [Double](repeating: 1, count: channels)
        for batch in batches {
            let (batchMean, biased) = channelStatistics(batch)
            let n = Double(batch.values.count / channels)
            for c in 0..<channels {
                mean[c] = (1 - momentum) * mean[c] + momentum * batchMean[c]
                variance[c] = (1 - momentum) * variance[c] + momentum * biased[c] * n / (n - 1)
            }
        }
        return (mean, variance)
    }

    static func relu(_ x: Image) -> Image {
        Image(values: x.values.map { max($0, 0) }, shape: x.shape)
    }

    /// nn.MaxPool2d: the maximum over each kernel × kernel window of the image padded with −∞.
    static func maxPool(_ x: Image, kernel: Int, stride: Int, padding: Int) -> Image {
        let s = x.shape
        let out = ImageShape(batch: s.batch, height: (s.height + 2 * padding - kernel) / stride + 1,
                             width: (s.width + 2 * padding - kernel) / stride + 1, channels: s.channels)
        var y = [Double](repeating: 0, count: out.count)
        for b in 0..<out.batch {
            for i in 0..<out.height {
                for j in 0..<out.width {
                    for c in 0..<s.channels {
                        var maximum = -Double.infinity
                        for kh in 0..<kernel {
                            for kw in 0..<kernel {
                                let (h, w) = (i * stride - padding + kh, j * stride - padding + kw)
                                if h >= 0 && h < s.height && w >= 0 && w < s.width { maximum = max(maximum, x.values[s.index(b, h, w, c)]) }
                            }
                        }
                        y[out.index(b, i, j, c)] = maximum
                    }
                }
            }
        }
        return Image(values: y, shape: out)
    }

    /// nn.AdaptiveAvgPool2d((1, 1)) then flatten: [batch, channels] means over height and width.
    static func averagePool(_ x: Image) -> [Double] {
        let s = x.shape
        var y = [Double](repeating: 0, count: s.batch * s.channels)
        for b in 0..<s.batch {
            for h in 0..<s.height {
                for w in 0..<s.width {
                    for c in 0..<s.channels { y[b * s.channels + c] += x.values[s.index(b, h, w, c)] / Double(s.height * s.width) }
                }
            }
        }
        return y
    }

    /// Logits [batch, classes] of fc(avgpool(x)), fc.weight [classes, features], fc.bias [classes].
    static func classifierLogits(_ x: Image, classes: Int, _ w: Weights) -> [Double] {
        let pooled = averagePool(x)
        let logits = Reference.linear(pooled, w["fc.weight"], inputSize: x.shape.channels, outputSize: classes)
        return logits.indices.map { logits[$0] + w["fc.bias"][$0 % classes] }
    }

    /// Σ lossWeight · (logsumexp(logits_b) − logits_b[label_b]).
    static func crossEntropy(logits: [Double], labels: [Int32], classes: Int, lossWeight: Double) -> Double {
        var loss = 0.0
        for (b, label) in labels.enumerated() {
            let row = Array(logits[b * classes..<(b + 1) * classes])
            let maximum = row.max()!
            loss += lossWeight * (maximum + log(row.reduce(0) { $0 + exp($1 - maximum) }) - row[Int(label)])
        }
        return loss
    }

    /// A batch norm of `w`'s `name.weight` / `name.bias`, in training mode or (with `eval`) on
    /// `name.running_mean` / `name.running_var`.
    static func namedBatchNorm(_ x: Image, _ name: String, _ w: Weights, eval: Bool, eps: Double = 1e-5) -> Image {
        batchNorm(x, weight: w[name + ".weight"], bias: w[name + ".bias"], eps: eps,
                  running: eval ? (w[name + ".running_mean"], w[name + ".running_var"]) : nil)
    }

    /// torchvision's Bottleneck (V1.5: the stride on conv2), downsample when `w` has `downsample.0.weight`.
    static func bottleneck(_ x: Image, planes: Int, stride: Int, _ w: Weights, eval: Bool = false) -> Image {
        var out = conv2d(x, weight: w["conv1.weight"], outputChannels: planes, kernel: 1, stride: 1, padding: 0)
        out = relu(namedBatchNorm(out, "bn1", w, eval: eval))
        out = conv2d(out, weight: w["conv2.weight"], outputChannels: planes, kernel: 3, stride: stride, padding: 1)
        out = relu(namedBatchNorm(out, "bn2", w, eval: eval))
        out = conv2d(out, weight: w["conv3.weight"], outputChannels: 4 * planes, kernel: 1, stride: 1, padding: 0)
        out = namedBatchNorm(out, "bn3", w, eval: eval)
        var identity = x
        if w.values[w.prefix + "downsample.0.weight"] != nil {
            identity = conv2d(x, weight: w["downsample.0.weight"], outputChannels: 4 * planes, kernel: 1, stride: stride, padding: 0)
            identity = namedBatchNorm(identity, "downsample.1", w, eval: eval)
        }
        precondition(identity.shape == out.shape, "reference bottleneck: identity \(identity.shape) vs \(out.shape)")
        return relu(Image(values: zip(out.values, identity.values).map(+), shape: out.shape))
    }

    /// torchvision ResNet's stem: conv1 7×7 stride 2 padding 3, bn1, relu, maxpool 3×3 stride 2 padding 1.
    static func stem(_ x: Image, outputChannels: Int, _ w: Weights, eval: Bool = false) -> Image {
        let convolved = conv2d(x, weight: w["conv1.weight"], outputChannels: outputChannels, kernel: 7, stride: 2, padding: 3)
        return maxPool(relu(namedBatchNorm(convolved, "bn1", w, eval: eval)), kernel: 3, stride: 2, padding: 1)
    }
}
