"""The popular tutorial's transfer-learning loop, as written.

Only what it needs to run here was changed: the missing `import torch.nn as nn`, ImageNet weights
read from a file (no download), and the class count taken from the data. Everything else (BatchNorm
left in train mode, the frozen backbone recomputed every epoch, accuracy only) is the tutorial's.
"""
import time

import torch
import torch.nn as nn  # missing in the tutorial
from torchvision import datasets, models, transforms


def run_tutorial(data_dir: str, weights_file: str, epochs: int = 10) -> dict:
    transform = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    train_data = datasets.ImageFolder(f"{data_dir}/train", transform=transform)
    test_data = datasets.ImageFolder(f"{data_dir}/test", transform=transform)
    train_loader = torch.utils.data.DataLoader(train_data, batch_size=16, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_data, batch_size=16)

    model = models.mobilenet_v2()
    model.load_state_dict(torch.load(weights_file, weights_only=True))  # tutorial: pretrained=True
    for param in model.parameters():
        param.requires_grad = False
    num_classes = len(train_data.classes)  # tutorial: hard-coded
    model.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(model.last_channel, num_classes))

    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.classifier.parameters(), lr=0.001)

    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        running_loss = 0.0
        for inputs, labels in train_loader:
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        print(f"Epoch {epoch + 1}/{epochs}, Loss: {running_loss / len(train_loader):.4f}", flush=True)

    model.eval()
    test_loss, correct, total, probs, targets = 0.0, 0, 0, [], []
    with torch.no_grad():
        for inputs, labels in test_loader:
            outputs = model(inputs)
            test_loss += criterion(outputs, labels).item()
            correct += (outputs.argmax(1) == labels).sum().item()
            total += labels.size(0)
            probs.append(outputs.softmax(1)[:, 1])  # kept for the benchmark's AUROC; not in the tutorial
            targets.append(labels)
    seconds = time.perf_counter() - start
    print(f"Test Loss: {test_loss / len(test_loader):.4f}, Test Accuracy: {100 * correct / total:.2f}%")
    return {"seconds": seconds, "accuracy": correct / total,
            "probs": torch.cat(probs).numpy(), "targets": torch.cat(targets).numpy()}
