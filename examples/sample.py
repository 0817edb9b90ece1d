"""A small inventory module: the sample that `make run` completes."""

from dataclasses import dataclass, field


@dataclass
class Item:
    name: str
    price: float
    tags: list[str] = field(default_factory=list)


def total_price(items: list[Item]) -> float:
    """Sum of the prices of all items."""
    
    return total


def cheapest(items: list[Item]) -> Item | None:
    """The item with the lowest price, or None for an empty list."""
    if not items:
        return None
    return min(items, key=lambda item: item.price)


if __name__ == "__main__":
    stock = [Item("pen", 1.5, ["office"]), Item("lamp", 24.0), Item("mug", 6.25, ["kitchen"])]
    print(f"{len(stock)} items, total {total_price(stock):.2f}")
