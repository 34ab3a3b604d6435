namespace Allocators.Workloads.Traces;

/// <summary>
/// Zipf-distributed item numbers in [0, n): item i is drawn with probability proportional to 1 / (i + 1)^theta.
/// </summary>
/// <remarks>
/// The generator of Gray, Sundaresan, Englert, Baclawski and Weinberger, "Quickly Generating Billion-Record Synthetic
/// Databases" (SIGMOD 1994, section 6), as YCSB's <c>ZipfianGenerator</c> implements it (Cooper et al., "Benchmarking
/// Cloud Serving Systems with YCSB", SoCC 2010), whose default constant is theta = 0.99. It needs one O(n) zeta sum at
/// construction and then O(1) per draw: items 0 and 1 get their exact probabilities, the rest follow a closed-form
/// approximation of the inverse CDF.
/// </remarks>
internal sealed class ZipfianGenerator
{
    /// <summary>YCSB's <c>ZipfianGenerator.ZIPFIAN_CONSTANT</c>.</summary>
    public const double YcsbTheta = 0.99;

    private readonly int _items;
    private readonly double _theta;
    private readonly double _alpha;
    private readonly double _zetan;
    private readonly double _eta;
    private readonly double _half;

    /// <summary>A generator over <paramref name="items"/> items with skew <paramref name="theta"/> (0 &lt; theta &lt; 1).</summary>
    public ZipfianGenerator(int items, double theta = YcsbTheta)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(items, 2);
        if (!(theta > 0 && theta < 1)) throw new ArgumentOutOfRangeException(nameof(theta), theta, "the generator needs 0 < theta < 1");
        _items = items;
        _theta = theta;
        _zetan = Zeta(items, theta);
        double zeta2 = Zeta(2, theta);
        _alpha = 1 / (1 - theta);
        _eta = (1 - Math.Pow(2.0 / items, 1 - theta)) / (1 - zeta2 / _zetan);
        _half = 1 + Math.Pow(0.5, theta);
    }

    /// <summary>Probability of item 0, the hottest: 1 / zeta(n, theta).</summary>
    public double TopProbability => 1 / _zetan;

    /// <summary>zeta(n, theta) = sum over i = 1..n of 1 / i^theta.</summary>
    public static double Zeta(int n, double theta)
    {
        double sum = 0;
        for (int i = 1; i <= n; i++) sum += 1 / Math.Pow(i, theta);
        return sum;
    }

    /// <summary>The next item, 0 the most frequent; <paramref name="u"/> is uniform in [0, 1).</summary>
    public int Next(double u)
    {
        double uz = u * _zetan;
        if (uz < 1) return 0;
        if (uz < _half) return 1;
        int item = (int)(_items * Math.Pow(_eta * u - _eta + 1, _alpha));
        // The approximation can reach n at u close to 1.
        return Math.Min(item, _items - 1);
    }
}
