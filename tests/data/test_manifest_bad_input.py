"""CSV manifests: missing-value labels, one class, no findings, and paths that are never guessed."""
import numpy as np
import pytest
from PIL import Image

from mobilemed.data.sources import DataOptions, read_source
from mobilemed.errors import MobilemedError


def write_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((8, 8), 40, np.uint8)).save(folder / name)


@pytest.fixture
def images(tmp_path):
    write_images(tmp_path, [f"{i}.png" for i in range(6)])
    return tmp_path


@pytest.mark.parametrize("missing", ["NaN", "nan", "NA", "N/A", "None", "null", "", " "])
def test_missing_value_labels_are_refused_with_row_and_column(images, missing):
    rows = ["0.png,a", "1.png,b", "2.png,a", f"3.png,{missing}", "4.png,b"]
    (images / "m.csv").write_text("path,diagnosis\n" + "\n".join(rows) + "\n")
    with pytest.raises(MobilemedError, match=r"m.csv: row 5 has .* in column 'diagnosis'.*missing label") as err:
        read_source(str(images / "m.csv"), DataOptions(label_column="diagnosis"))
    assert "fill in every label or remove those rows" in str(err.value)


def test_a_csv_with_one_class_is_refused_like_a_one_class_folder(images):
    (images / "m.csv").write_text("path,label\n" + "\n".join(f"{i}.png,effusion" for i in range(6)) + "\n")
    with pytest.raises(MobilemedError, match="found 1 class \\('effusion'\\).*at least two classes"):
        read_source(str(images / "m.csv"), DataOptions())


def test_joined_labels_with_no_finding_at_all_are_refused(images):
    (images / "m.csv").write_text("path,findings\n" + "\n".join(f"{i}.png," for i in range(6)) + "\n")
    with pytest.raises(MobilemedError, match="column 'findings' lists no finding in any row"):
        read_source(str(images / "m.csv"), DataOptions(label_column="findings", label_sep="|"))
    (images / "n.csv").write_text("path,findings\n0.png,Mass|nan\n1.png,Mass\n")
    with pytest.raises(MobilemedError, match="row 2 of column 'findings' lists 'nan'"):
        read_source(str(images / "n.csv"), DataOptions(label_column="findings", label_sep="|"))


def test_multi_hot_columns_without_a_positive_are_refused(images):
    (images / "m.csv").write_text("path,mass,effusion\n" + "\n".join(f"{i}.png,0,0" for i in range(6)) + "\n")
    with pytest.raises(MobilemedError, match="no row has a 1 in any of the label columns mass, effusion"):
        read_source(str(images / "m.csv"), DataOptions(label_columns=["mass", "effusion"]))


def test_a_missing_path_is_never_replaced_by_a_same_named_file(images):
    write_images(images / "elsewhere", ["7.png"])  # the old by-name guess would have taken this one
    (images / "m.csv").write_text("path,label\n0.png,a\n1.png,b\nold_top/7.png,a\nold_top/8.png,b\n")
    with pytest.raises(MobilemedError) as err:
        read_source(str(images / "m.csv"), DataOptions())
    message = str(err.value)
    assert "2 of 4 image(s) in column 'path' do not exist under" in message and str(images) in message
    assert "row 4: 'old_top/7.png', row 5: 'old_top/8.png'" in message and "--image-root" in message


def test_paths_outside_the_image_root_need_allow_outside_root(tmp_path):
    write_images(tmp_path / "outside", ["x.png"])
    root = tmp_path / "root"
    write_images(root, ["0.png", "1.png"])
    absolute = tmp_path / "outside" / "x.png"
    (root / "m.csv").write_text(f"path,label\n0.png,a\n1.png,b\n../outside/x.png,a\n{absolute},b\n")
    with pytest.raises(MobilemedError, match=r"2 path\(s\) in column 'path' lead outside the image root") as err:
        read_source(str(root / "m.csv"), DataOptions())
    assert "--allow-outside-root" in str(err.value)
    table = read_source(str(root / "m.csv"), DataOptions(allow_outside_root=True))
    assert table.paths.tolist() == [str(root / "0.png"), str(root / "1.png"), str(absolute), str(absolute)]


def test_a_symlinked_folder_under_the_root_is_inside_it(tmp_path):
    write_images(tmp_path / "real", ["0.png", "1.png"])
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    (root / "m.csv").write_text("path,label\nlinked/0.png,a\nlinked/1.png,b\n")
    table = read_source(str(root / "m.csv"), DataOptions())
    assert table.paths.tolist() == [str(root / "linked" / "0.png"), str(root / "linked" / "1.png")]
