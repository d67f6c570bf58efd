"""The latent nearest-neighbour baseline: patches, banks, distances."""

import torch

from decodiff.models.latent_nn import LatentNearestNeighbour, latent_patches


def test_patches_hold_each_cell_with_its_mirrored_neighbourhood():
    z = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    p = latent_patches(z)
    assert p.shape == (1, 16, 2 * 9)
    centre = p[0, 5].view(2, 3, 3)  # cell (1, 1): an inner cell sees its 3x3 block exactly
    torch.testing.assert_close(centre, z[0, :, 0:3, 0:3])
    corner = p[0, 0].view(2, 3, 3)  # cell (0, 0): mirrored ("reflect") at the border
    assert corner[0, 0, 0] == z[0, 0, 1, 1] and corner[0, 1, 1] == z[0, 0, 0, 0]


def test_a_normal_latent_is_at_distance_zero_and_a_foreign_cell_stands_out():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(3, 4, 8, 8, generator=g)
    nn = LatentNearestNeighbour(bank_size=10_000)
    nn.add(train, ["a", "a", "a"])
    nn.add(train + 100, ["b", "b", "b"])  # another category's bank: never used for "a"
    assert nn.fit() == {"a": 192, "b": 192}
    test = train[:1].clone()
    test[0, :, 5, 2] += 5.0  # one anomalous cell
    d = nn.distances(torch.cat([train[1:2], test]), ["a", "a"])
    assert d.shape == (2, 8, 8)
    assert d[0].abs().max() < 0.02  # a training latent is in its bank (cdist by matrix products: ~1e-3 error)
    i, j = divmod(d[1].flatten().argmax().item(), 8)
    assert abs(i - 5) <= 1 and abs(j - 2) <= 1 and d[1, 5, 2] > 4.0  # the cell or a neighbour whose patch holds it
    far = torch.ones(8, 8, dtype=torch.bool)
    far[4:7, 1:4] = False
    assert d[1][far].max() < 0.02  # cells whose patches miss it are normal


def test_the_bank_is_a_seeded_subset_of_the_set_size():
    z = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    banks = []
    for _ in range(2):
        nn = LatentNearestNeighbour(bank_size=50, seed=3, tile=7)
        nn.add(z, ["c"] * 4)
        assert nn.fit() == {"c": 50}
        banks.append(nn.banks["c"])
    assert torch.equal(banks[0], banks[1])
    full = latent_patches(z).reshape(-1, 36)
    assert all((full == row).all(dim=1).any() for row in banks[0])  # every kept patch is a training patch


def test_tiles_of_any_size_give_the_exact_nearest_distance():
    """Tiles smaller than the queries and the bank, and not dividing them, against a brute-force
    minimum in float64: a tile that drops rows or columns, or adds |q|^2 twice, fails."""
    g = torch.Generator().manual_seed(2)
    train, test = torch.randn(5, 4, 6, 6, generator=g), torch.randn(3, 4, 6, 6, generator=g) * 2
    bank = latent_patches(train).reshape(-1, 36).double()
    q = latent_patches(test).reshape(-1, 36).double()
    want = torch.cdist(q, bank, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1).view(3, 6, 6)
    for tile in (7, 64, 4096):
        nn = LatentNearestNeighbour(tile=tile)
        nn.add(train, ["c"] * 5)
        nn.fit()
        torch.testing.assert_close(nn.distances(test, ["c"] * 3).double(), want, atol=2e-4, rtol=1e-4)
